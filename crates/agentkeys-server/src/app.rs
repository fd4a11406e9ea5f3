//! The router, built by a function that tests can drive without a socket: every domain's routes,
//! merged, plus health, readiness, metrics and the OpenAPI document.

use std::sync::Arc;

use agentkeys_proto::types::MAX_BODY_BYTES;
use agentkeys_proto::{ErrorBody, ErrorCode};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AgentKeys API",
        description = "Zero-knowledge credential server. Every /v1 request except POST /v1/accounts carries \
                       `Authorization: Bearer <token>` and an Ed25519 signature by the session's device key in \
                       x-agentkeys-timestamp, x-agentkeys-nonce and x-agentkeys-signature (see docs/protocol.md)."
    ),
    // Schemas only path parameters name (utoipa collects those of bodies and queries itself).
    components(schemas(ErrorBody, ErrorCode, agentkeys_proto::names::AgentId, agentkeys_proto::ids::RequestCode)),
    modifiers(&SessionScheme)
)]
struct ApiDoc;

/// The security scheme of signed routes: a bearer token, with the signature headers each signed
/// operation lists as parameters.
struct SessionScheme;

impl utoipa::Modify for SessionScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "The session token, with an Ed25519 signature by the session's device key in the \
             x-agentkeys-timestamp, x-agentkeys-nonce and x-agentkeys-signature headers (docs/protocol.md)."
                .into(),
        );
        components.add_security_scheme(crate::http::action::SESSION_SCHEME, SecurityScheme::Http(bearer));
        let mut poll = Http::new(HttpAuthScheme::Bearer);
        poll.description = Some("The poll secret a daemon opened its pairing with (only its hash was sent).".into());
        components.add_security_scheme("pairing_poll", SecurityScheme::Http(poll));
    }
}

/// The `/v1` routes of every domain and the OpenAPI document generated from their annotations.
fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(crate::domains::routes()).split_for_parts()
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    api_routes().1.to_pretty_json().expect("the OpenAPI document serializes")
}

async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    metrics.record_request(&route, &method, response.status().as_u16());
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.db.ping().await.map_err(ApiError::unavailable)?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn no_such_route() -> ApiError {
    ApiError::not_found("no such endpoint", "see /v1/openapi.json for the API")
}

/// An endpoint asked with a method it does not take: 405, and axum adds the `Allow` header.
async fn wrong_method() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method",
        "use a method the Allow header lists; see /v1/openapi.json for the API",
    )
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api_routes();
    let openapi: Arc<str> = openapi.to_pretty_json().expect("the OpenAPI document serializes").into();
    api.route(
        "/v1/openapi.json",
        get(move || {
            let openapi = openapi.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], openapi.to_string()) }
        }),
    )
    .route("/healthz", get(healthz))
    .route("/readyz", get(readyz))
    .route("/metrics", get(metrics))
    .merge(crate::domains::presence::page::routes())
    .route_layer(middleware::from_fn_with_state(state.metrics.clone(), track))
    .fallback(no_such_route)
    .method_not_allowed_fallback(wrong_method)
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(middleware::from_fn(crate::http::signed::take_presence))
    .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::clock::Clock;

    async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::db::sqlite_url_for(dir.path());
        let (state, _writer) = crate::start(&url, Clock::system()).await.unwrap();
        (router(state), dir)
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn health_and_errors_without_a_socket() {
        let (app, _dir) = app().await;
        let (status, body) = call(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
        let (status, body) = call(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));

        let (status, body) = call(&app, Request::get("/v1/credentials/openai").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
        assert!(body["error"]["hint"].as_str().unwrap().contains("agentkeys init"));

        let (status, body) = call(&app, Request::delete("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"))
        );
        let response = app.clone().oneshot(Request::delete("/v1/accounts").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.headers().get(header::ALLOW).map(|v| v.to_str().unwrap()), Some("POST"));

        let oversized = Body::from(vec![b'{'; MAX_BODY_BYTES + 1]);
        let (status, body) = call(&app, Request::post("/v1/accounts").body(oversized).unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
        );
    }

    /// Every schema the document points to is in it: a path parameter's type is not collected by
    /// utoipa, and schemathesis would stop at the first reference it cannot resolve.
    #[test]
    fn every_schema_reference_resolves() {
        let document: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let defined = document["components"]["schemas"].as_object().unwrap();
        let text = document.to_string();
        let dangling: Vec<&str> = text
            .split("\"#/components/schemas/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| !defined.contains_key(*name))
            .collect();
        assert!(dangling.is_empty(), "schemas referenced but not defined: {dangling:?}");
    }
}
