use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

use super::response::{apply_headers, too_many_requests};
use crate::{Check, Decision};

pin_project! {
    /// The response future of [`RateLimitService`](super::RateLimitService): the decision,
    /// then (when allowed) the inner service's response with the rate-limit headers added.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking {
            check: Check,
            call: Option<(S, Request<B>)>,
        },
        Calling {
            #[pin]
            future: S::Future,
            decision: Option<Decision>,
        },
        Done,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(check: Check, service: S, request: Request<B>) -> Self {
        Self {
            state: State::Checking {
                check,
                call: Some((service, request)),
            },
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, call } => {
                    let decision = ready!(Pin::new(check).poll(cx));
                    let taken = call.take();
                    if !decision.allowed {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(too_many_requests(&decision)));
                    }
                    let Some((mut service, request)) = taken else {
                        this.state.set(State::Done);
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        decision: Some(decision),
                    });
                }
                StateProj::Calling { future, decision } => {
                    let result = ready!(future.poll(cx));
                    let decision = decision.take();
                    this.state.set(State::Done);
                    let mut response = result?;
                    if let Some(decision) = decision {
                        apply_headers(response.headers_mut(), &decision);
                    }
                    return Poll::Ready(Ok(response));
                }
                // Polled again after completion: there is nothing left to produce.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
