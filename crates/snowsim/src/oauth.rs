//! OAuth 2.0 as ServiceNow offers it: `POST /oauth_token.do` (form-encoded; grants
//! `client_credentials`, `password`, `refresh_token`, `authorization_code`) and the
//! authorization-code login at `/oauth_auth.do`.
//!
//! Every token-endpoint failure is the same opaque `401 {"error":"server_error",
//! "error_description":"access_denied"}` real instances send; the reason only shows in the
//! simulator's debug log, as it only shows in an instance's system log.

use std::{collections::HashMap, time::Instant};

use axum::{
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use secrecy::ExposeSecret;
use serde_json::json;
use url::Url;

use crate::{
    auth::{constant_time_eq, parse_basic},
    http::{LogInfo, header_str, json_response, with_info},
    locks::lock,
    sim::Simulator,
};

const FORM: &str = "application/x-www-form-urlencoded";

fn denied(reason: &str) -> Response {
    tracing::debug!(reason, "token request denied");
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "server_error", "error_description": "access_denied"}),
    )
}

fn media_type(headers: &HeaderMap) -> String {
    header_str(headers, header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `POST /oauth_token.do`.
pub(crate) async fn token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut info = LogInfo::default();
    let response = grant(&sim, &headers, &body, &mut info).await;
    with_info(response, info)
}

async fn grant(sim: &Simulator, headers: &HeaderMap, body: &[u8], info: &mut LogInfo) -> Response {
    if let Some(response) = sim.injected(false).await {
        return response;
    }
    if media_type(headers) != FORM {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "invalid_request",
                "error_description": "the request body must be application/x-www-form-urlencoded",
            }),
        );
    }
    let params = form(body);
    let param = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };

    // Client authentication: in the body, or HTTP Basic as RFC 6749 also allows.
    let basic = header_str(headers, header::AUTHORIZATION).and_then(parse_basic);
    let (client_id, client_secret) = match (param("client_id"), param("client_secret"), &basic) {
        (Some(id), Some(secret), _) => (id.to_owned(), secret.to_owned()),
        (_, _, Some((id, secret))) => (id.clone(), secret.clone()),
        _ => return denied("no client credentials"),
    };
    let Some(client) = sim.inner.oauth_clients.get(&client_id) else {
        return denied("unknown client");
    };
    if !constant_time_eq(
        client.client_secret.expose_secret().as_bytes(),
        client_secret.as_bytes(),
    ) {
        return denied("wrong client secret");
    }

    let now = Instant::now();
    let ttl = sim.inner.token_ttl;
    let refresh_ttl = sim.inner.refresh_ttl;
    let issued = match param("grant_type") {
        Some("client_credentials") => {
            let Some(user) = client
                .app_user
                .clone()
                .or_else(|| sim.inner.default_app_user.clone())
                .filter(|u| sim.caller(u).is_some())
            else {
                return denied("no usable OAuth Application User");
            };
            lock(&sim.inner.tokens).issue(&user, &client_id, now, ttl, None)
        }
        Some("password") => {
            let (Some(user), Some(password)) = (param("username"), param("password")) else {
                return denied("username or password missing");
            };
            if !sim.inner.accounts.check_password(user, password) || sim.caller(user).is_none() {
                return denied("bad user credentials");
            }
            lock(&sim.inner.tokens).issue(user, &client_id, now, ttl, Some(refresh_ttl))
        }
        Some("refresh_token") => {
            let Some(refresh) = param("refresh_token") else {
                return denied("refresh_token missing");
            };
            let issued = lock(&sim.inner.tokens).refresh(refresh, &client_id, now, ttl);
            match issued {
                Some(issued) if sim.caller(&issued.user).is_some() => issued,
                _ => return denied("refresh token unknown, expired or not this client's"),
            }
        }
        Some("authorization_code") => {
            let Some(code) = param("code") else {
                return denied("code missing");
            };
            let redeemed =
                lock(&sim.inner.tokens).redeem_code(code, &client_id, param("redirect_uri"), now);
            let Some(user) = redeemed.filter(|u| sim.caller(u).is_some()) else {
                return denied("code unknown, used, expired or not this client's");
            };
            lock(&sim.inner.tokens).issue(&user, &client_id, now, ttl, Some(refresh_ttl))
        }
        _ => return denied("unsupported grant_type"),
    };
    info.user = Some(issued.user.clone());
    let mut body = json!({
        "access_token": issued.access_token,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    });
    if let (Some(refresh), Some(map)) = (issued.refresh_token, body.as_object_mut()) {
        map.insert("refresh_token".into(), refresh.into());
    }
    let mut response = json_response(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The authorize request's parameters, checked.
struct AuthorizeRequest {
    client_id: String,
    redirect_uri: Url,
    state: Option<String>,
}

fn authorize_request(
    sim: &Simulator,
    params: &HashMap<String, String>,
) -> Result<AuthorizeRequest, &'static str> {
    if params.get("response_type").map(String::as_str) != Some("code") {
        return Err("response_type must be code");
    }
    let client_id = params
        .get("client_id")
        .filter(|id| sim.inner.oauth_clients.contains_key(*id))
        .ok_or("Invalid client_id")?;
    let redirect_uri = params
        .get("redirect_uri")
        .and_then(|u| Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or("redirect_uri must be an absolute http(s) URL")?;
    Ok(AuthorizeRequest {
        client_id: client_id.clone(),
        redirect_uri,
        state: params.get("state").cloned(),
    })
}

/// `GET /oauth_auth.do?response_type=code&client_id=..&redirect_uri=..&state=..`: the login form.
pub(crate) async fn authorize_form(
    State(sim): State<Simulator>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = form(query.unwrap_or_default().as_bytes());
    match authorize_request(&sim, &params) {
        Ok(request) => html(StatusCode::OK, &login_page(&request, None)),
        Err(problem) => html(StatusCode::BAD_REQUEST, &error_page(problem)),
    }
}

/// `POST /oauth_auth.do` (form: the authorize parameters plus `username`, `password`):
/// 302 to `redirect_uri?code=..&state=..`, or 401 with the form again.
pub(crate) async fn authorize_submit(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if media_type(&headers) != FORM {
        return html(
            StatusCode::BAD_REQUEST,
            &error_page("the login form must be form-encoded"),
        );
    }
    let params = form(&body);
    let request = match authorize_request(&sim, &params) {
        Ok(request) => request,
        Err(problem) => return html(StatusCode::BAD_REQUEST, &error_page(problem)),
    };
    let user = params
        .get("username")
        .map(String::as_str)
        .unwrap_or_default();
    let password = params
        .get("password")
        .map(String::as_str)
        .unwrap_or_default();
    if !sim.inner.accounts.check_password(user, password) || sim.caller(user).is_none() {
        let page = login_page(&request, Some("User name or password invalid"));
        return html(StatusCode::UNAUTHORIZED, &page);
    }
    let code = lock(&sim.inner.tokens).issue_code(
        user,
        &request.client_id,
        request.redirect_uri.as_str(),
        Instant::now(),
    );
    let mut target = request.redirect_uri.clone();
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(state) = &request.state {
            pairs.append_pair("state", state);
        }
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(location) = HeaderValue::from_str(target.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    with_info(
        response,
        LogInfo {
            user: Some(user.to_owned()),
            ..LogInfo::default()
        },
    )
}

fn html(status: StatusCode, page: &str) -> Response {
    let mut response = Response::new(Body::from(page.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

fn login_page(request: &AuthorizeRequest, problem: Option<&str>) -> String {
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
            escape(value)
        )
    };
    let mut fields = hidden("response_type", "code");
    fields.push_str(&hidden("client_id", &request.client_id));
    fields.push_str(&hidden("redirect_uri", request.redirect_uri.as_str()));
    if let Some(state) = &request.state {
        fields.push_str(&hidden("state", state));
    }
    let problem = problem
        .map(|p| format!("<p class=\"error\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html><head><title>Log in | snowsim</title></head><body>\n\
         <h1>Log in</h1>\n{problem}<form method=\"post\" action=\"/oauth_auth.do\">\n{fields}\
         <label>User name <input type=\"text\" name=\"username\"></label>\n\
         <label>Password <input type=\"password\" name=\"password\"></label>\n\
         <button type=\"submit\">Log in</button>\n</form>\n</body></html>\n"
    )
}

fn error_page(problem: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>OAuth error | snowsim</title></head><body>\n\
         <h1>OAuth error</h1>\n<p>{}</p>\n</body></html>\n",
        escape(problem)
    )
}
