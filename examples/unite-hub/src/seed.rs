//! Demo data: `unite-hub seed --users N --contacts M`.

use tokio_postgres::GenericClient;

/// The password every demo user signs in with.
pub const DEMO_PASSWORD: &str = "demo-password";

/// What a seed run created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    /// Users created (existing demo users are kept as they are).
    pub users: u64,
    /// Contacts created.
    pub contacts: u64,
}

/// Creates `users` demo users (`demo1@example.com` …, plans cycling free → pro → enterprise)
/// with `contacts_per_user` contacts each. Users that already exist are left alone, so seeding
/// twice adds nothing.
pub async fn seed(
    c: &impl GenericClient,
    users: u32,
    contacts_per_user: u32,
) -> anyhow::Result<Seeded> {
    let hash = crate::auth::hash_password(DEMO_PASSWORD)
        .map_err(|e| anyhow::anyhow!("password hash: {e}"))?;
    let created = c
        .query(
            "INSERT INTO users (email, name, password_hash, plan)
             SELECT 'demo' || i || '@example.com', 'Demo User ' || i, $1,
                    (ARRAY['free', 'pro', 'enterprise'])[1 + (i - 1) % 3]
             FROM generate_series(1, $2::int) AS i
             ON CONFLICT (email) DO NOTHING
             RETURNING id",
            &[&hash, &(users as i32)],
        )
        .await?;
    let ids: Vec<i64> = created.iter().map(|r| r.get(0)).collect();
    let contacts = c
        .execute(
            "INSERT INTO contacts (owner_id, name, email, phone, company, notes)
             SELECT u, 'Contact ' || n,
                    CASE WHEN n % 7 = 0 THEN '' ELSE 'contact' || n || '@' ||
                         (ARRAY['example.com', 'example.org', 'example.net'])[1 + n % 3] END,
                    CASE WHEN n % 5 = 0 THEN '' ELSE '+1-555-' || lpad((n % 10000)::text, 4, '0') END,
                    (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli', ''])[1 + n % 6],
                    ''
             FROM unnest($1::bigint[]) AS u, generate_series(1, $2::int) AS n",
            &[&ids, &(contacts_per_user as i32)],
        )
        .await?;
    Ok(Seeded {
        users: ids.len() as u64,
        contacts,
    })
}
