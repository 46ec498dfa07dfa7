//! The Table API: `/api/now[/v1|/v2]/table/{table}[/{sys_id}]`.
//!
//! Order of checks, as a client sees them: latency and injected faults; authentication (401);
//! the rate-limit rule (429, headers on every later answer); the API-level ACL (403); the table
//! (400); `Accept` (406); then the operation, with `Content-Type` and body checks for writes
//! (400/415), record ACLs (404 for hidden rows, 403 for refused writes) and the data policy.

use std::{collections::HashMap, time::Instant};

use axum::{
    body::{Body, Bytes},
    extract::{
        Path, State,
        rejection::{BytesRejection, PathRejection},
    },
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    auth::{AccessLevel, ReadAccess, WriteOp, can_write, read_access},
    error::SimError,
    http::{
        ApiError, LogInfo, base_url, header_str, json_response, not_a_resource, unauthenticated,
        with_info,
    },
    limits::{RATE_LIMIT_RULE, RateVerdict},
    locks::read,
    logic::Target,
    render::{self, DisplayMode, RenderOptions},
    schema::{SYS_ID, TABLES, table_id},
    sim::{Caller, Simulator, json_scalar, select},
};

/// `sysparm_limit` when none (or an unusable one) is given.
const DEFAULT_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Latest,
    V1,
    V2,
}

impl Version {
    fn prefix(self) -> &'static str {
        match self {
            Version::Latest => "/api/now/table",
            Version::V1 => "/api/now/v1/table",
            Version::V2 => "/api/now/v2/table",
        }
    }
}

/// Everything a Table API operation needs from the request.
struct Call<'a> {
    sim: &'a Simulator,
    caller: Caller,
    table: usize,
    version: Version,
    method: Method,
    sys_id: Option<String>,
    headers: &'a HeaderMap,
    params: Vec<(String, String)>,
    /// `http://host/api/now/.../table`, for reference links and `Location`.
    link_base: String,
    /// `http://host/<path>`, for `Link` headers.
    self_url: String,
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.param(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// Handles every Table API route.
pub(crate) async fn handle(
    State(sim): State<Simulator>,
    method: Method,
    path: Result<Path<HashMap<String, String>>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // A path that does not decode (bad percent-encoding) names no resource.
    let Ok(Path(path)) = path else {
        return not_a_resource().into_response();
    };
    let mut info = LogInfo {
        table: path.get("table").cloned(),
        sys_id: path.get("sys_id").cloned(),
        user: None,
    };
    let response = match serve(&sim, method, &path, &uri, &headers, body, &mut info).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    with_info(response, info)
}

async fn serve(
    sim: &Simulator,
    method: Method,
    path: &HashMap<String, String>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    info: &mut LogInfo,
) -> Result<Response, ApiError> {
    let version = match path.get("version").map(String::as_str) {
        None => Version::Latest,
        Some("v1") => Version::V1,
        Some("v2") => Version::V2,
        Some(_) => return Err(not_a_resource()),
    };
    if let Some(response) = sim.injected(true).await {
        return Ok(response);
    }
    let caller = sim.authenticate(headers).ok_or_else(unauthenticated)?;
    info.user = Some(caller.user_name.clone());

    let verdict = sim.inner.rate.as_ref().map(|limiter| {
        (
            limiter.check(&caller.user_name, Instant::now()),
            limiter.window,
        )
    });
    let mut response = match verdict {
        Some((v, window)) if !v.allowed => rate_limited(v, window),
        _ => {
            let incoming = Incoming {
                method,
                path,
                uri,
                headers,
            };
            match operate(sim, caller, version, incoming, body) {
                Ok(response) => response,
                Err(error) => error.into_response(),
            }
        }
    };
    if let Some((v, _)) = verdict {
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(v.limit));
        h.insert("x-ratelimit-reset", HeaderValue::from(v.reset_unix));
        h.insert(
            "x-ratelimit-rule",
            HeaderValue::from_static(RATE_LIMIT_RULE),
        );
    }
    Ok(response)
}

fn rate_limited(v: RateVerdict, window: std::time::Duration) -> Response {
    let per = if window == std::time::Duration::from_secs(3600) {
        "hour".to_owned()
    } else {
        humantime::format_duration(window).to_string()
    };
    let mut response = ApiError::detailed(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit exceeded",
        format!(
            "Rate limit of {} requests per {per} for Table API exceeded",
            v.limit
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(v.retry_after));
    response
}

/// The parts of a request an operation reads.
struct Incoming<'a> {
    method: Method,
    path: &'a HashMap<String, String>,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

fn operate(
    sim: &Simulator,
    caller: Caller,
    version: Version,
    incoming: Incoming<'_>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Incoming {
        method,
        path,
        uri,
        headers,
    } = incoming;
    let table_name = path.get("table").map(String::as_str).unwrap_or_default();
    if caller.level == AccessLevel::NoRole {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "User Not Authorized",
            Some("Failed API level ACL Validation"),
        ));
    }
    let table = table_id(table_name).ok_or_else(|| {
        ApiError::detailed(
            StatusCode::BAD_REQUEST,
            format!("Invalid table {table_name}"),
            format!("Table {table_name} does not exist"),
        )
    })?;
    if !accepts_json(headers) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable",
            Some("The Accept header must allow application/json"),
        ));
    }
    let base = base_url(uri, headers);
    let call = Call {
        sim,
        caller,
        table,
        version,
        sys_id: path.get("sys_id").cloned(),
        headers,
        params: uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        link_base: format!("{base}{}", version.prefix()),
        self_url: format!("{base}{}", uri.path()),
        method,
    };
    match (&call.method, call.sys_id.clone()) {
        (&Method::GET | &Method::HEAD, None) => list(&call),
        (&Method::GET | &Method::HEAD, Some(sys_id)) => get_one(&call, &sys_id),
        (&Method::POST, None) => insert(&call, body),
        (&Method::PATCH | &Method::PUT, Some(sys_id)) => update(&call, &sys_id, body),
        (&Method::DELETE, Some(sys_id)) => delete(&call, &sys_id),
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not Supported",
            Some("The method is not supported for this resource"),
        )),
    }
}

fn accepts_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    values.filter_map(|v| v.to_str().ok()).any(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            !refused
                && matches!(
                    media.as_str(),
                    "application/json" | "application/*" | "*/*" | "*"
                )
        })
    })
}

fn options<'a>(call: &'a Call<'_>, fields: &'a Option<Vec<String>>) -> RenderOptions<'a> {
    RenderOptions {
        mode: DisplayMode::parse(call.param("sysparm_display_value")),
        exclude_links: call.flag("sysparm_exclude_reference_link"),
        fields: fields.as_deref(),
        link_base: &call.link_base,
    }
}

fn requested_fields(call: &Call<'_>) -> Option<Vec<String>> {
    call.param("sysparm_fields").map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn record_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn list(call: &Call<'_>) -> Result<Response, ApiError> {
    let offset = match call
        .param("sysparm_offset")
        .map(|v| v.trim().parse::<i64>())
    {
        Some(Ok(n)) if n < 0 => {
            return Err(ApiError::detailed(
                StatusCode::BAD_REQUEST,
                format!("offset is {n}"),
                "Negative offset is not supported",
            ));
        }
        Some(Ok(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        _ => 0,
    };
    let limit = call
        .param("sysparm_limit")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map_or(DEFAULT_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let query = call.param("sysparm_query");
    // Plain `field=value` parameters filter only when there is no sysparm_query.
    let filters: Vec<(String, String)> = if query.is_some() {
        Vec::new()
    } else {
        call.params
            .iter()
            .filter(|(k, _)| !k.starts_with("sysparm_"))
            .cloned()
            .collect()
    };
    let fields = requested_fields(call);
    let opts = options(call, &fields);
    let def = TABLES[call.table];

    let store = read(&call.sim.inner.store);
    let (total, page) = match read_access(call.caller.level, call.table) {
        ReadAccess::Hidden => (0, Vec::new()),
        ReadAccess::Allowed => {
            let rows = select(
                &store,
                call.table,
                query.unwrap_or_default(),
                &filters,
                &call.caller.user_name,
                &call.caller.sys_id,
            );
            let total = rows.len();
            let page: Vec<Value> = rows
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|row| render::record(&store, def, row, &opts))
                .collect();
            (total, page)
        }
    };
    drop(store);

    if call.version == Version::V1 && page.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No Record found",
            Some("Records matching query not found. Check query parameter or offset parameter"),
        ));
    }
    let mut response = json_response(StatusCode::OK, &json!({ "result": page }));
    let headers = response.headers_mut();
    if !call.flag("sysparm_no_count") {
        headers.insert("x-total-count", HeaderValue::from(total));
    }
    if !call.flag("sysparm_suppress_pagination_header")
        && let Some(link) = link_header(call, offset, limit, total)
        && let Ok(value) = HeaderValue::from_str(&link)
    {
        headers.insert(header::LINK, value);
    }
    Ok(response)
}

/// `Link` with first, prev, next and last pages; `None` when everything fits on one page.
fn link_header(call: &Call<'_>, offset: usize, limit: usize, total: usize) -> Option<String> {
    if offset == 0 && total <= limit {
        return None;
    }
    let url = |page_offset: usize| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &call.params {
            if k != "sysparm_offset" && k != "sysparm_limit" {
                query.append_pair(k, v);
            }
        }
        query.append_pair("sysparm_limit", &limit.to_string());
        query.append_pair("sysparm_offset", &page_offset.to_string());
        format!("{}?{}", call.self_url, query.finish())
    };
    let last = total.saturating_sub(1) / limit * limit;
    let mut links = vec![format!("<{}>;rel=\"first\"", url(0))];
    if offset > 0 {
        links.push(format!(
            "<{}>;rel=\"prev\"",
            url(offset.saturating_sub(limit))
        ));
    }
    if offset.saturating_add(limit) < total {
        links.push(format!("<{}>;rel=\"next\"", url(offset + limit)));
    }
    links.push(format!("<{}>;rel=\"last\"", url(last)));
    Some(links.join(","))
}

fn get_one(call: &Call<'_>, sys_id: &str) -> Result<Response, ApiError> {
    if read_access(call.caller.level, call.table) == ReadAccess::Hidden {
        return Err(record_not_found());
    }
    let fields = requested_fields(call);
    let opts = options(call, &fields);
    let store = read(&call.sim.inner.store);
    let row = store.get(call.table, sys_id).ok_or_else(record_not_found)?;
    let result = render::record(&store, TABLES[call.table], row, &opts);
    drop(store);
    Ok(json_response(StatusCode::OK, &json!({ "result": result })))
}

fn acl_refused(op: WriteOp) -> ApiError {
    ApiError::detailed(
        StatusCode::FORBIDDEN,
        "Operation Failed",
        format!(
            "ACL Exception {} Failed due to security constraints",
            op.word()
        ),
    )
}

fn insert(call: &Call<'_>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let input = write_input(call.headers, body)?;
    if !can_write(call.caller.level, call.table, WriteOp::Insert) {
        return Err(acl_refused(WriteOp::Insert));
    }
    let committed = call
        .sim
        .write(&call.caller.user_name, call.table, Target::Insert, &input)
        .map_err(write_error)?;
    let location = format!(
        "{}/{}/{}",
        call.link_base, TABLES[call.table].name, committed.row[SYS_ID]
    );
    let mut response = written(call, StatusCode::CREATED, &committed.row);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

fn update(
    call: &Call<'_>,
    sys_id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input = write_input(call.headers, body)?;
    if read_access(call.caller.level, call.table) == ReadAccess::Hidden {
        return Err(record_not_found());
    }
    if read(&call.sim.inner.store)
        .get(call.table, sys_id)
        .is_none()
    {
        return Err(record_not_found());
    }
    if !can_write(call.caller.level, call.table, WriteOp::Update) {
        return Err(acl_refused(WriteOp::Update));
    }
    let committed = call
        .sim
        .write(
            &call.caller.user_name,
            call.table,
            Target::Update(sys_id),
            &input,
        )
        .map_err(write_error)?;
    Ok(written(call, StatusCode::OK, &committed.row))
}

fn delete(call: &Call<'_>, sys_id: &str) -> Result<Response, ApiError> {
    if read_access(call.caller.level, call.table) == ReadAccess::Hidden
        || read(&call.sim.inner.store)
            .get(call.table, sys_id)
            .is_none()
    {
        return Err(record_not_found());
    }
    if !can_write(call.caller.level, call.table, WriteOp::Delete) {
        return Err(acl_refused(WriteOp::Delete));
    }
    let name = TABLES[call.table].name;
    call.sim.delete(name, sys_id).map_err(write_error)?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// The answer to a successful write: the record, unless `X-no-response-body: true`.
fn written(call: &Call<'_>, status: StatusCode, row: &crate::store::Row) -> Response {
    let suppress = header_str(
        call.headers,
        header::HeaderName::from_static("x-no-response-body"),
    )
    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if suppress {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        return response;
    }
    let fields = requested_fields(call);
    let opts = options(call, &fields);
    let store = read(&call.sim.inner.store);
    let result = render::record(&store, TABLES[call.table], row, &opts);
    drop(store);
    json_response(status, &json!({ "result": result }))
}

fn write_error(error: SimError) -> ApiError {
    match error {
        SimError::DataPolicy { .. } => {
            ApiError::detailed(StatusCode::FORBIDDEN, "Operation Failed", error.to_string())
        }
        SimError::NotFound { .. } => record_not_found(),
        SimError::InvalidTable(name) => ApiError::detailed(
            StatusCode::BAD_REQUEST,
            format!("Invalid table {name}"),
            format!("Table {name} does not exist"),
        ),
    }
}

/// The write body as field/value pairs: a JSON object (or the first object of an array, which
/// is all ServiceNow processes), sent as `application/json`.
fn write_input(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let Some(content_type) = header_str(headers, header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Content-Type header is required",
            Some("Send the request body as application/json"),
        ));
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err(ApiError::detailed(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            format!("Content-Type {media} is not supported; use application/json"),
        ));
    }
    let invalid = |detail: &'static str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Exception while reading request",
            Some(detail),
        )
    };
    let bytes = body.map_err(|_| invalid("The request body could not be read."))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| invalid("The payload is not valid JSON."))?;
    let object = match value {
        Value::Object(map) => map,
        Value::Array(items) => match items.into_iter().next() {
            Some(Value::Object(map)) => map,
            _ => return Err(invalid("The payload must be a JSON object.")),
        },
        _ => return Err(invalid("The payload must be a JSON object.")),
    };
    Ok(object
        .into_iter()
        .filter_map(|(k, v)| json_scalar(&v).map(|s| (k, s)))
        .collect())
}
