//! Table API operations: read one, list a page, list everything, update, insert.

use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

use nowpilot_model::Record;

use super::{Call, Client};
use crate::error::{Error, RequestContext};
use crate::query::{EncodedQuery, QueryError, has_order_by};
use crate::response::{decode_record, decode_records, next_offset, total_count};
use crate::transport::RawResponse;

/// Appended to list queries that have no `ORDERBY`: offset paging is only stable over a total
/// order (reference §1.6).
pub(crate) const STABLE_ORDER: &str = "ORDERBYsys_created_on^ORDERBYsys_id";

/// `sysparm_display_value`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DisplayValue {
    /// Stored values (`false`, the default): sys_ids, choice values, UTC dates.
    #[default]
    Stored,
    /// Display values (`true`): labels, display names, dates in the user's time zone.
    Display,
    /// Both (`all`): every field as `{"display_value", "value"}`.
    Both,
}

impl DisplayValue {
    fn as_param(self) -> &'static str {
        match self {
            DisplayValue::Stored => "false",
            DisplayValue::Display => "true",
            DisplayValue::Both => "all",
        }
    }
}

/// Options for reading one record.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// `sysparm_fields`; empty means all fields.
    pub fields: Vec<String>,
    /// `sysparm_display_value`.
    pub display_value: DisplayValue,
    /// `sysparm_exclude_reference_link=true`: references come back as plain sys_ids.
    pub exclude_reference_link: bool,
}

impl ReadOptions {
    /// Reads only these fields.
    pub fn fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `sysparm_display_value`.
    pub fn display_value(mut self, display_value: DisplayValue) -> Self {
        self.display_value = display_value;
        self
    }

    /// Sets `sysparm_exclude_reference_link`.
    pub fn exclude_reference_link(mut self, exclude: bool) -> Self {
        self.exclude_reference_link = exclude;
        self
    }
}

/// One list call's parameters.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// `sysparm_query` (build it with [`EncodedQuery`]).
    pub query: Option<String>,
    /// `sysparm_fields`; empty means all fields.
    pub fields: Vec<String>,
    /// `sysparm_limit` (ServiceNow's default is 10 000).
    pub limit: Option<u32>,
    /// `sysparm_offset`.
    pub offset: u64,
    /// `sysparm_display_value`.
    pub display_value: DisplayValue,
    /// `sysparm_exclude_reference_link`.
    pub exclude_reference_link: bool,
    /// `sysparm_no_count=true`: skip the count query (no `X-Total-Count`).
    pub no_count: bool,
}

impl ListRequest {
    /// A request with no query (all rows).
    pub fn new() -> Self {
        Self::default()
    }

    /// A request for the rows an [`EncodedQuery`] selects.
    pub fn from_query(query: &EncodedQuery) -> Result<Self, QueryError> {
        let text = query.build()?;
        Ok(ListRequest {
            query: (!text.is_empty()).then_some(text),
            ..Self::default()
        })
    }

    /// Sets `sysparm_query` verbatim.
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Reads only these fields.
    pub fn fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `sysparm_limit`.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets `sysparm_offset`.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Sets `sysparm_display_value`.
    pub fn display_value(mut self, display_value: DisplayValue) -> Self {
        self.display_value = display_value;
        self
    }

    /// Sets `sysparm_exclude_reference_link`.
    pub fn exclude_reference_link(mut self, exclude: bool) -> Self {
        self.exclude_reference_link = exclude;
        self
    }

    /// Sets `sysparm_no_count`.
    pub fn no_count(mut self, no_count: bool) -> Self {
        self.no_count = no_count;
        self
    }
}

/// One page of a list call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The records.
    pub records: Vec<Record>,
    /// `X-Total-Count`: rows matching the query (before ACLs hide any), when sent.
    pub total: Option<u64>,
    /// The offset of the next page from the `Link` header, when it names one.
    pub next_offset: Option<u64>,
    /// Whether the answer had a `Link` header at all (ServiceNow omits it when everything
    /// fits in one page).
    pub has_link: bool,
}

fn valid_table(table: &str) -> bool {
    !table.is_empty()
        && table.len() <= 80
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_field(field: &str) -> bool {
    !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

impl Client {
    fn table_url(&self, method: &Method, table: &str, sys_id: Option<&str>) -> Result<Url, Error> {
        let invalid = |reason: String| Error::InvalidRequest {
            context: RequestContext::new(
                method.as_str(),
                if valid_table(table) { table } else { "invalid" },
            ),
            reason,
        };
        if !valid_table(table) {
            return Err(invalid(format!(
                "{:?} is not a table name (letters, digits and _ only)",
                table.chars().take(100).collect::<String>()
            )));
        }
        let mut segments = vec!["api", "now", "v2", "table", table];
        if let Some(id) = sys_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "the sys_id is empty, too long or contains whitespace".to_owned(),
                ));
            }
            segments.push(id);
        }
        Ok(self.inner.instance.endpoint(segments))
    }

    fn add_fields(
        method: &Method,
        table: &str,
        url: &mut Url,
        fields: &[String],
    ) -> Result<(), Error> {
        if fields.is_empty() {
            return Ok(());
        }
        if let Some(bad) = fields.iter().find(|f| !valid_field(f)) {
            return Err(Error::InvalidRequest {
                context: RequestContext::new(method.as_str(), table),
                reason: format!(
                    "{:?} is not a field name",
                    bad.chars().take(100).collect::<String>()
                ),
            });
        }
        url.query_pairs_mut()
            .append_pair("sysparm_fields", &fields.join(","));
        Ok(())
    }

    /// Reads one record (`GET /api/now/v2/table/{table}/{sys_id}`). A missing record and one
    /// an ACL hides both give [`Error::NotFound`].
    pub async fn get(
        &self,
        table: &str,
        sys_id: &str,
        options: &ReadOptions,
    ) -> Result<Record, Error> {
        let method = Method::GET;
        let mut url = self.table_url(&method, table, Some(sys_id))?;
        Self::add_fields(&method, table, &mut url, &options.fields)?;
        {
            let mut query = url.query_pairs_mut();
            if options.display_value != DisplayValue::Stored {
                query.append_pair("sysparm_display_value", options.display_value.as_param());
            }
            if options.exclude_reference_link {
                query.append_pair("sysparm_exclude_reference_link", "true");
            }
        }
        let response = self
            .execute(Call {
                method,
                table,
                url,
                body: None,
                quiet: false,
            })
            .await?;
        decode_record(
            &RequestContext::new("GET", table),
            response.status,
            &response.headers,
            &response.body,
        )
    }

    /// Reads one page (`GET /api/now/v2/table/{table}?...`).
    pub async fn list(&self, table: &str, request: &ListRequest) -> Result<Page, Error> {
        let method = Method::GET;
        let mut url = self.table_url(&method, table, None)?;
        Self::add_fields(&method, table, &mut url, &request.fields)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(q) = request.query.as_deref().filter(|q| !q.is_empty()) {
                query.append_pair("sysparm_query", q);
            }
            if let Some(limit) = request.limit {
                query.append_pair("sysparm_limit", &limit.to_string());
            }
            if request.offset > 0 {
                query.append_pair("sysparm_offset", &request.offset.to_string());
            }
            if request.display_value != DisplayValue::Stored {
                query.append_pair("sysparm_display_value", request.display_value.as_param());
            }
            if request.exclude_reference_link {
                query.append_pair("sysparm_exclude_reference_link", "true");
            }
            if request.no_count {
                query.append_pair("sysparm_no_count", "true");
            }
        }
        let response = self
            .execute(Call {
                method,
                table,
                url,
                body: None,
                quiet: false,
            })
            .await?;
        let records = decode_records(
            &RequestContext::new("GET", table),
            response.status,
            &response.headers,
            &response.body,
        )?;
        Ok(Page {
            records,
            total: total_count(&response.headers),
            next_offset: next_offset(&response.headers),
            has_link: response.headers.contains_key(http::header::LINK),
        })
    }

    /// Reads every matching row, up to `max_rows`, page by page (`sysparm_offset += limit`).
    ///
    /// A query without `ORDERBY` gets `^ORDERBYsys_created_on^ORDERBYsys_id` so pages do not
    /// overlap. Paging stops at `X-Total-Count`; a short or empty page does **not** end it
    /// while the count says more rows exist, because ServiceNow applies `sysparm_limit` before
    /// ACLs and a page can come back short with readable rows after it. Without a count
    /// (`no_count`), a `Link` header without `next` ends it, and without a `Link` header a page
    /// shorter than the limit does.
    pub async fn list_all(
        &self,
        table: &str,
        request: &ListRequest,
        max_rows: usize,
    ) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        if max_rows == 0 {
            return Ok(out);
        }
        let limit = request.limit.unwrap_or(self.inner.options.page_size).max(1);
        let query = match request.query.as_deref().filter(|q| !q.is_empty()) {
            Some(q) if has_order_by(q) => q.to_owned(),
            Some(q) => format!("{q}^{STABLE_ORDER}"),
            None => STABLE_ORDER.to_owned(),
        };
        let mut page_request = request.clone().query(query).limit(limit);
        loop {
            let page = self.list(table, &page_request).await?;
            let received = page.records.len();
            out.extend(page.records);
            if out.len() >= max_rows {
                out.truncate(max_rows);
                break;
            }
            let next = page_request.offset.saturating_add(u64::from(limit));
            let more = match page.total {
                Some(total) => next < total,
                None if page.has_link => page.next_offset.is_some(),
                None => received >= limit as usize,
            };
            if !more || (page.total.is_none() && received == 0) {
                break;
            }
            page_request.offset = next;
        }
        Ok(out)
    }

    fn write_body(
        method: &Method,
        table: &str,
        fields: &Map<String, Value>,
    ) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(fields).map_err(|e| Error::InvalidRequest {
            context: RequestContext::new(method.as_str(), table),
            reason: format!("the fields cannot be encoded as JSON: {e}"),
        })
    }

    /// Updates fields of one record (`PATCH`) and returns the record as stored, including what
    /// business rules and data lookups changed (e.g. `priority` from impact × urgency).
    pub async fn patch(
        &self,
        table: &str,
        sys_id: &str,
        fields: &Map<String, Value>,
    ) -> Result<Record, Error> {
        self.write_record(Method::PATCH, table, Some(sys_id), fields)
            .await
    }

    /// Like [`Client::patch`], asking only for the `returning` fields back
    /// (`sysparm_fields`): a smaller answer when the caller needs, say, the new
    /// `sys_mod_count` and what the data lookups computed.
    pub async fn patch_returning(
        &self,
        table: &str,
        sys_id: &str,
        fields: &Map<String, Value>,
        returning: &[&str],
    ) -> Result<Record, Error> {
        let context = RequestContext::new(Method::PATCH.as_str(), table);
        let response = self
            .write(Method::PATCH, table, Some(sys_id), fields, false, returning)
            .await?;
        decode_record(&context, response.status, &response.headers, &response.body)
    }

    /// Updates fields without asking for the record back (`X-no-response-body: true`).
    pub async fn patch_quiet(
        &self,
        table: &str,
        sys_id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), Error> {
        self.write(Method::PATCH, table, Some(sys_id), fields, true, &[])
            .await
            .map(|_| ())
    }

    /// Inserts one record (`POST`) and returns it as stored (with `sys_id`, `number`, …).
    pub async fn insert(&self, table: &str, fields: &Map<String, Value>) -> Result<Record, Error> {
        self.write_record(Method::POST, table, None, fields).await
    }

    /// A write whose answer is the record as stored.
    async fn write_record(
        &self,
        method: Method,
        table: &str,
        sys_id: Option<&str>,
        fields: &Map<String, Value>,
    ) -> Result<Record, Error> {
        let context = RequestContext::new(method.as_str(), table);
        let response = self
            .write(method, table, sys_id, fields, false, &[])
            .await?;
        decode_record(&context, response.status, &response.headers, &response.body)
    }

    /// Sends one write (never retried on 5xx or timeouts: it may have committed), asking for
    /// the `returning` fields back (all when empty).
    async fn write(
        &self,
        method: Method,
        table: &str,
        sys_id: Option<&str>,
        fields: &Map<String, Value>,
        quiet: bool,
        returning: &[&str],
    ) -> Result<RawResponse, Error> {
        let mut url = self.table_url(&method, table, sys_id)?;
        let returning: Vec<String> = returning.iter().map(|f| (*f).to_owned()).collect();
        Self::add_fields(&method, table, &mut url, &returning)?;
        let body = Self::write_body(&method, table, fields)?;
        self.execute(Call {
            method,
            table,
            url,
            body: Some(body),
            quiet,
        })
        .await
    }
}
