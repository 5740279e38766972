//! The service's queries, each through the pool's query methods, so every one is counted in
//! the pool's statistics and passes its circuit breaker.
//!
//! Where a query runs is the caller's choice, through [`Query`]: the primary (`&Pool`, a
//! [`Writer`]) or a replica when the caller allows it (a [`Reader`], from `pool.read()` or a
//! read-your-writes `Session`). Writes take a [`Writer`], so a `Session`'s writes are
//! recorded. See the README's *Read replicas* for which route goes where.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use unite_pool::{Error, Pool, Reader, Writer};

/// Query parameters, as the pool takes them.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Somewhere read queries can run: the primary ([`Pool`], [`Writer`]) or the replicas
/// ([`Reader`]).
pub trait Query: Sync {
    /// Every row.
    fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;
    /// Exactly one row.
    fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Row, Error>> + Send;
    /// At most one row.
    fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;
}

macro_rules! impl_query {
    ($($ty:ty),*) => {$(
        impl Query for $ty {
            fn query(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send {
                <$ty>::query(self, sql, params)
            }
            fn query_one(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> impl Future<Output = Result<Row, Error>> + Send {
                <$ty>::query_one(self, sql, params)
            }
            fn query_opt(
                &self,
                sql: &str,
                params: Params<'_>,
            ) -> impl Future<Output = Result<Option<Row>, Error>> + Send {
                <$ty>::query_opt(self, sql, params)
            }
        }
    )*};
}
impl_query!(Pool, Reader<'_>, Writer<'_>);

/// A user's plan tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// The free plan.
    Free,
    /// The pro plan.
    Pro,
    /// The enterprise plan.
    Enterprise,
}

impl Plan {
    fn parse(s: &str) -> Self {
        match s {
            "pro" => Self::Pro,
            "enterprise" => Self::Enterprise,
            _ => Self::Free,
        }
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

/// What a valid session says about its user: the value cached under the token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The user.
    pub user_id: i64,
    /// Their plan.
    pub plan: Plan,
    /// When the session ends (Unix seconds).
    pub expires_at: i64,
}

/// A user as sign-in sees it.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Id.
    pub id: i64,
    /// Stored password hash.
    pub password_hash: String,
    /// Plan.
    pub plan: Plan,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Id.
    pub id: i64,
    /// Owner.
    pub owner_id: i64,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: String,
    /// Company.
    pub company: String,
    /// Notes.
    pub notes: String,
    /// Bumped on every write: the ETag.
    pub version: i64,
}

/// The writable fields of a contact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// Name (required, 1-200 characters).
    pub name: String,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Phone.
    #[serde(default)]
    pub phone: String,
    /// Company.
    #[serde(default)]
    pub company: String,
    /// Notes.
    #[serde(default)]
    pub notes: String,
}

impl ContactInput {
    /// Checks lengths; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err("name must be 1 to 200 characters".into());
        }
        for (field, value, max) in [
            ("email", &self.email, 320),
            ("phone", &self.phone, 50),
            ("company", &self.company, 200),
            ("notes", &self.notes, 10_000),
        ] {
            if value.chars().count() > max {
                return Err(format!("{field} must be at most {max} characters"));
            }
        }
        Ok(())
    }
}

fn contact(row: &tokio_postgres::Row) -> Contact {
    Contact {
        id: row.get("id"),
        owner_id: row.get("owner_id"),
        name: row.get("name"),
        email: row.get("email"),
        phone: row.get("phone"),
        company: row.get("company"),
        notes: row.get("notes"),
        version: row.get("version"),
    }
}

const CONTACT_COLUMNS: &str = "id, owner_id, name, email, phone, company, notes, version";

/// The user with this email.
pub async fn user_by_email(pool: &Pool, email: &str) -> Result<Option<UserRow>, Error> {
    let row = pool
        .query_opt(
            "SELECT id, password_hash, plan FROM users WHERE email = $1",
            &[&email],
        )
        .await?;
    Ok(row.map(|r| UserRow {
        id: r.get(0),
        password_hash: r.get(1),
        plan: Plan::parse(r.get(2)),
    }))
}

/// Stores a new session; returns its expiry (Unix seconds).
pub async fn insert_session(
    pool: &Pool,
    token_hash: &[u8],
    user_id: i64,
    ttl_secs: i64,
) -> Result<i64, Error> {
    let row = pool
        .query_one(
            "INSERT INTO sessions (token_hash, user_id, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             RETURNING extract(epoch FROM expires_at)::bigint",
            &[&token_hash, &user_id, &(ttl_secs as f64)],
        )
        .await?;
    Ok(row.get(0))
}

const SESSION_SQL: &str = "SELECT s.user_id, u.plan, extract(epoch FROM s.expires_at)::bigint
     FROM sessions s JOIN users u ON u.id = s.user_id
     WHERE s.token_hash = $1 AND s.expires_at > now()";

fn session_info(r: &Row) -> SessionInfo {
    SessionInfo {
        user_id: r.get(0),
        plan: Plan::parse(r.get(1)),
        expires_at: r.get(2),
    }
}

/// The live session with this token hash: asked of a replica first, then of the primary when
/// the replica does not have it.
///
/// Sessions are only ever inserted, so a session a replica finds is current; one it does not
/// find may be a moment old and not replayed there yet (signed in on another instance whose
/// cache write did not reach this one). Confirming misses on the primary gives
/// read-your-writes for sign-in without any position to carry; the price is a second query
/// for unknown tokens, which the cache's negative entries absorb.
pub async fn session(pool: &Pool, token_hash: &[u8]) -> Result<Option<SessionInfo>, Error> {
    let found = pool.read().query_opt(SESSION_SQL, &[&token_hash]).await?;
    if found.is_some() || !pool.has_replicas() {
        return Ok(found.as_ref().map(session_info));
    }
    let row = pool.query_opt(SESSION_SQL, &[&token_hash]).await?;
    Ok(row.as_ref().map(session_info))
}

/// One contact of one owner.
pub async fn contact_get(
    pool: &impl Query,
    owner_id: i64,
    id: i64,
) -> Result<Option<Contact>, Error> {
    let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE owner_id = $1 AND id = $2");
    Ok(pool
        .query_opt(&sql, &[&owner_id, &id])
        .await?
        .as_ref()
        .map(contact))
}

/// A page of an owner's contacts, by id.
pub async fn contact_list(
    pool: &impl Query,
    owner_id: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Contact>, Error> {
    let sql = format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts WHERE owner_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    Ok(pool
        .query(&sql, &[&owner_id, &after_id, &limit])
        .await?
        .iter()
        .map(contact)
        .collect())
}

/// Creates a contact.
pub async fn contact_create(
    pool: &Writer<'_>,
    owner_id: i64,
    input: &ContactInput,
) -> Result<Contact, Error> {
    let sql = format!(
        "INSERT INTO contacts (owner_id, name, email, phone, company, notes)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {CONTACT_COLUMNS}"
    );
    let row = pool
        .query_one(
            &sql,
            &[
                &owner_id,
                &input.name.trim(),
                &input.email,
                &input.phone,
                &input.company,
                &input.notes,
            ],
        )
        .await?;
    Ok(contact(&row))
}

/// Replaces a contact's fields; `None` when the owner has no such contact.
pub async fn contact_update(
    pool: &Writer<'_>,
    owner_id: i64,
    id: i64,
    input: &ContactInput,
) -> Result<Option<Contact>, Error> {
    let sql = format!(
        "UPDATE contacts SET name = $3, email = $4, phone = $5, company = $6, notes = $7,
                version = version + 1, updated_at = now()
         WHERE owner_id = $1 AND id = $2 RETURNING {CONTACT_COLUMNS}"
    );
    let row = pool
        .query_opt(
            &sql,
            &[
                &owner_id,
                &id,
                &input.name.trim(),
                &input.email,
                &input.phone,
                &input.company,
                &input.notes,
            ],
        )
        .await?;
    Ok(row.as_ref().map(contact))
}

/// Deletes a contact; whether it existed.
pub async fn contact_delete(pool: &Writer<'_>, owner_id: i64, id: i64) -> Result<bool, Error> {
    Ok(pool
        .execute(
            "DELETE FROM contacts WHERE owner_id = $1 AND id = $2",
            &[&owner_id, &id],
        )
        .await?
        == 1)
}

/// The report over an owner's contacts: counts by company and email domain.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How many contacts.
    pub contacts: i64,
    /// The ten largest companies, with counts.
    pub top_companies: Vec<(String, i64)>,
    /// The ten most common email domains, with counts.
    pub top_email_domains: Vec<(String, i64)>,
    /// Contacts with neither email nor phone.
    pub unreachable: i64,
}

/// Computes the report (the expensive endpoint: it scans every contact of the owner).
pub async fn report(pool: &impl Query, owner_id: i64) -> Result<Report, Error> {
    let totals = pool
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE email = '' AND phone = '')
             FROM contacts WHERE owner_id = $1",
            &[&owner_id],
        )
        .await?;
    let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let companies = pool
        .query(
            "SELECT company, count(*) AS n FROM contacts
             WHERE owner_id = $1 AND company <> '' GROUP BY company ORDER BY n DESC, company LIMIT 10",
            &[&owner_id],
        )
        .await?;
    let domains = pool
        .query(
            "SELECT lower(split_part(email, '@', 2)) AS d, count(*) AS n FROM contacts
             WHERE owner_id = $1 AND email LIKE '%@%' GROUP BY d ORDER BY n DESC, d LIMIT 10",
            &[&owner_id],
        )
        .await?;
    Ok(Report {
        contacts: totals.get(0),
        unreachable: totals.get(1),
        top_companies: pairs(companies),
        top_email_domains: pairs(domains),
    })
}
