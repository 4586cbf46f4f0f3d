//! CloudWatch's API for the token-less request history ([`crate::fleet::history`]), on the
//! control listener, so `aws cloudwatch ... --endpoint-url` and boto3's `cloudwatch` client
//! find IMDSv1 callers the way they do on AWS.
//!
//! The wire protocol is the one botocore picks for CloudWatch: its model lists
//! `smithy-rpc-v2-cbor`, `json` and `query`, and botocore prefers `json` (AWS JSON 1.0): a
//! `POST /` with `Content-Type: application/x-amz-json-1.0`, `X-Amz-Target:
//! GraniteServiceVersion20100801.<Operation>` and `x-amzn-query-mode: true`, a JSON body with
//! timestamps as epoch seconds. Errors are `{"__type": ..., "message": ...}` with the query
//! error code in `x-amzn-query-error: <Code>;Sender` (CloudWatch is query-compatible), which is
//! the code clients report (`InvalidParameterValue`, `MissingParameter`, ...).
//!
//! Operations: `ListMetrics`, `GetMetricStatistics` and `GetMetricData`, for namespace
//! `AWS/EC2`, metrics `MetadataNoToken` and `MetadataNoTokenRejected` with the dimension
//! `InstanceId`, unit `Count`, one sample per minute with requests (so a period has a
//! datapoint only when it had requests); statistics `Sum`, `SampleCount`, `Maximum`,
//! `Minimum`, `Average`. A metric is listed while it has data within the 24 hours kept.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sigv4::SignatureError;
use super::ControlApi;
use crate::fleet::history::{NoTokenMetric, MINUTES};
use crate::fleet::instance_id::InstanceId;

/// What `X-Amz-Target` starts with on CloudWatch requests.
const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";
/// The one namespace served.
const NAMESPACE: &str = "AWS/EC2";
/// The one dimension.
const DIMENSION: &str = "InstanceId";
/// Metrics per `ListMetrics` page, as CloudWatch.
const PAGE: usize = 500;
/// Most datapoints one `GetMetricStatistics` answers, as CloudWatch.
const MAX_DATAPOINTS: i64 = 1440;
/// Most queries in one `GetMetricData`, as CloudWatch.
const MAX_QUERIES: usize = 500;

/// The CloudWatch operation a request names in `X-Amz-Target`, if it is a CloudWatch request.
pub(super) fn operation(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get("x-amz-target")?
        .to_str()
        .ok()?
        .strip_prefix(TARGET_PREFIX)
}

/// Why a CloudWatch request failed, answered in CloudWatch's JSON error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloudWatchError {
    MissingParameter(String),
    InvalidParameterValue(String),
    InvalidParameterCombination(String),
    InvalidNextToken,
    UnknownOperation,
    Serialization(String),
    Signature(SignatureError),
}

impl CloudWatchError {
    /// The query error code clients report, the `__type`, the status and the message.
    fn parts(&self) -> (&'static str, &'static str, StatusCode, String) {
        let bad = StatusCode::BAD_REQUEST;
        match self {
            CloudWatchError::MissingParameter(name) => (
                "MissingParameter",
                "MissingRequiredParameterException",
                bad,
                format!("The parameter {name} is required."),
            ),
            CloudWatchError::InvalidParameterValue(message) => (
                "InvalidParameterValue",
                "InvalidParameterValueException",
                bad,
                message.clone(),
            ),
            CloudWatchError::InvalidParameterCombination(message) => (
                "InvalidParameterCombination",
                "InvalidParameterCombinationException",
                bad,
                message.clone(),
            ),
            CloudWatchError::InvalidNextToken => (
                "InvalidNextToken",
                "InvalidNextToken",
                bad,
                "The service couldn't process your request because of an invalid NextToken.".into(),
            ),
            CloudWatchError::UnknownOperation => (
                "UnknownOperation",
                "UnknownOperationException",
                bad,
                "The operation is not supported by this endpoint.".into(),
            ),
            CloudWatchError::Serialization(message) => (
                "SerializationException",
                "SerializationException",
                bad,
                message.clone(),
            ),
            CloudWatchError::Signature(why) => {
                let code = match why {
                    SignatureError::Unsigned => "MissingAuthenticationToken",
                    SignatureError::UnknownKey => "InvalidClientTokenId",
                    SignatureError::Skewed => "RequestExpired",
                    SignatureError::Malformed
                    | SignatureError::Mismatch
                    | SignatureError::PayloadMismatch => "SignatureDoesNotMatch",
                };
                (
                    code,
                    code,
                    StatusCode::FORBIDDEN,
                    "The request signature is not valid.".into(),
                )
            }
        }
    }
}

/// A CloudWatch JSON answer.
fn answer(status: StatusCode, body: Value, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = super::reply(
        status,
        "application/x-amz-json-1.0",
        Bytes::from(body.to_string()),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    response
}

fn error_response(error: &CloudWatchError, request_id: &str) -> Response<Full<Bytes>> {
    let (code, kind, status, message) = error.parts();
    let body = json!({
        "__type": format!("com.amazonaws.cloudwatch#{kind}"),
        "message": message,
    });
    let mut response = answer(status, body, request_id);
    response.headers_mut().insert(
        "x-amzn-query-error",
        HeaderValue::from_str(&format!("{code};Sender")).expect("codes are ASCII"),
    );
    response
}

/// The answer to a CloudWatch request whose signature `why` refuses.
pub(super) fn refused(why: SignatureError, request_id: &str) -> Response<Full<Bytes>> {
    error_response(&CloudWatchError::Signature(why), request_id)
}

/// A dimension, or a `ListMetrics` dimension filter (whose value may be left out).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Dimension {
    name: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListMetricsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    dimensions: Vec<Dimension>,
    next_token: Option<String>,
    recently_active: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GetMetricStatisticsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    dimensions: Vec<Dimension>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    period: Option<i64>,
    statistics: Vec<String>,
    extended_statistics: Vec<String>,
    unit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Metric {
    namespace: Option<String>,
    metric_name: Option<String>,
    dimensions: Vec<Dimension>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MetricStat {
    metric: Option<Metric>,
    period: Option<i64>,
    stat: Option<String>,
    unit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MetricDataQuery {
    id: Option<String>,
    metric_stat: Option<MetricStat>,
    expression: Option<String>,
    label: Option<String>,
    return_data: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct GetMetricDataInput {
    metric_data_queries: Vec<MetricDataQuery>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    scan_by: Option<String>,
}

/// A statistic over the minutes of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statistic {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
}

impl Statistic {
    const ALL: [Statistic; 5] = [
        Statistic::SampleCount,
        Statistic::Average,
        Statistic::Sum,
        Statistic::Minimum,
        Statistic::Maximum,
    ];

    fn name(self) -> &'static str {
        match self {
            Statistic::SampleCount => "SampleCount",
            Statistic::Average => "Average",
            Statistic::Sum => "Sum",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
        }
    }

    fn parse(name: &str) -> Option<Statistic> {
        Statistic::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One period's samples (one per minute with requests).
#[derive(Debug, Clone, Copy, Default)]
struct Samples {
    sum: u64,
    count: u64,
    max: u64,
    min: u64,
}

impl Samples {
    fn add(&mut self, value: u64) {
        self.min = if self.count == 0 {
            value
        } else {
            self.min.min(value)
        };
        self.max = self.max.max(value);
        self.sum += value;
        self.count += 1;
    }

    fn value(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::SampleCount => self.count as f64,
            Statistic::Average => self.sum as f64 / self.count as f64,
            Statistic::Sum => self.sum as f64,
            Statistic::Minimum => self.min as f64,
            Statistic::Maximum => self.max as f64,
        }
    }
}

/// A time range (epoch seconds, end excluded) cut into periods from its start's minute.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    end: i64,
    period: i64,
}

impl Window {
    /// The request's start and end (epoch seconds), checked.
    fn range(start: Option<f64>, end: Option<f64>) -> Result<(i64, i64), CloudWatchError> {
        let start = start.ok_or_else(|| CloudWatchError::MissingParameter("StartTime".into()))?;
        let end = end.ok_or_else(|| CloudWatchError::MissingParameter("EndTime".into()))?;
        let (start, end) = (start.floor() as i64, end.floor() as i64);
        if start >= end {
            return Err(CloudWatchError::InvalidParameterValue(
                "The parameter StartTime must be less than the parameter EndTime.".into(),
            ));
        }
        Ok((start, end))
    }

    /// The first period's start: the start time rounded down to the minute.
    fn first(&self) -> i64 {
        self.start.div_euclid(60) * 60
    }

    /// How many periods the window spans.
    fn periods(&self) -> i64 {
        (self.end - self.first() + self.period - 1) / self.period
    }
}

fn period(period: Option<i64>, name: &str) -> Result<i64, CloudWatchError> {
    let period = period.ok_or_else(|| CloudWatchError::MissingParameter(name.into()))?;
    if period <= 0 || period % 60 != 0 {
        return Err(CloudWatchError::InvalidParameterValue(format!(
            "The parameter {name} must be a multiple of 60."
        )));
    }
    Ok(period)
}

fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, CloudWatchError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| CloudWatchError::Serialization(e.to_string()))
}

fn dimensions_json(instance: &str) -> Value {
    json!([{ "Name": DIMENSION, "Value": instance }])
}

impl ControlApi {
    /// Answers the CloudWatch request for `operation` with `body`.
    pub(super) fn cloudwatch(
        &self,
        operation: &str,
        body: &[u8],
        request_id: &str,
    ) -> Response<Full<Bytes>> {
        let (label, result) = match operation {
            "ListMetrics" => ("cloudwatch:ListMetrics", self.list_metrics(body)),
            "GetMetricStatistics" => (
                "cloudwatch:GetMetricStatistics",
                self.get_metric_statistics(body),
            ),
            "GetMetricData" => ("cloudwatch:GetMetricData", self.get_metric_data(body)),
            _ => ("(invalid)", Err(CloudWatchError::UnknownOperation)),
        };
        match result {
            Ok(value) => {
                self.metrics.control_action(label, "ok");
                answer(StatusCode::OK, value, request_id)
            }
            Err(error) => {
                let (code, ..) = error.parts();
                self.metrics.control_action(label, code);
                tracing::debug!(operation, ?error, "CloudWatch request refused");
                error_response(&error, request_id)
            }
        }
    }

    fn now_minute(&self) -> u64 {
        self.clock.now_millis() / 60_000
    }

    fn list_metrics(&self, body: &[u8]) -> Result<Value, CloudWatchError> {
        let input: ListMetricsInput = parse(body)?;
        let recent_minutes = match input.recently_active.as_deref() {
            None => MINUTES as u64,
            Some("PT3H") => 180,
            Some(other) => {
                return Err(CloudWatchError::InvalidParameterValue(format!(
                    "The value {other} for parameter RecentlyActive is not valid."
                )))
            }
        };
        for filter in &input.dimensions {
            if filter.name.is_none() {
                return Err(CloudWatchError::MissingParameter("Dimensions.Name".into()));
            }
        }
        let skip = match &input.next_token {
            None => 0,
            Some(token) => token
                .parse::<usize>()
                .map_err(|_| CloudWatchError::InvalidNextToken)?,
        };
        let namespace_matches = input.namespace.as_deref().is_none_or(|n| n == NAMESPACE);
        let metrics: Vec<NoTokenMetric> = NoTokenMetric::ALL
            .into_iter()
            .filter(|m| input.metric_name.as_deref().is_none_or(|n| n == m.name()))
            .collect();
        let now = self.now_minute();
        let mut instances = self.inventory.state.instances();
        instances.sort_by_key(|slot| slot.id().to_string());
        let mut found = Vec::new();
        if namespace_matches {
            for slot in &instances {
                let id = slot.id().to_string();
                let dimensions_match = input.dimensions.iter().all(|f| {
                    f.name.as_deref() == Some(DIMENSION)
                        && f.value.as_deref().is_none_or(|v| v == id)
                });
                if !dimensions_match {
                    continue;
                }
                let history = &slot.counters().no_token_history;
                for metric in &metrics {
                    if history.has_data(*metric, now, recent_minutes) {
                        found.push(json!({
                            "Namespace": NAMESPACE,
                            "MetricName": metric.name(),
                            "Dimensions": dimensions_json(&id),
                        }));
                    }
                }
            }
        }
        if skip > found.len() {
            return Err(CloudWatchError::InvalidNextToken);
        }
        let page: Vec<Value> = found.iter().skip(skip).take(PAGE).cloned().collect();
        let mut out = json!({ "Metrics": page });
        if skip + PAGE < found.len() {
            out["NextToken"] = Value::String((skip + PAGE).to_string());
        }
        Ok(out)
    }

    /// The samples of the metric named by `namespace`, `name` and `dimensions` within `window`,
    /// by period start (epoch seconds), for the periods with data: none for a metric imds does
    /// not keep.
    fn series(
        &self,
        namespace: &str,
        name: &str,
        dimensions: &[Dimension],
        window: Window,
    ) -> BTreeMap<i64, Samples> {
        let mut series = BTreeMap::new();
        let metric = match NoTokenMetric::from_name(name) {
            Some(metric) if namespace == NAMESPACE => metric,
            _ => return series,
        };
        let instance = match dimensions {
            [Dimension {
                name: Some(name),
                value: Some(value),
            }] if name == DIMENSION => value,
            _ => return series,
        };
        let Some(slot) = instance
            .parse::<InstanceId>()
            .ok()
            .and_then(|id| self.inventory.state.instance(&id))
        else {
            return series;
        };
        let history = &slot.counters().no_token_history;
        let now = self.now_minute();
        let first = window.first();
        let from = (first / 60).max(now as i64 - (MINUTES as i64 - 1)).max(0);
        let to = (window.end + 59).div_euclid(60).min(now as i64 + 1);
        for minute in from..to {
            let at = minute * 60;
            if at >= window.end {
                break;
            }
            let count = history.at(metric, minute as u64, now);
            if count > 0 {
                let period_start = first + (at - first) / window.period * window.period;
                series
                    .entry(period_start)
                    .or_insert_with(Samples::default)
                    .add(count);
            }
        }
        series
    }

    fn get_metric_statistics(&self, body: &[u8]) -> Result<Value, CloudWatchError> {
        let input: GetMetricStatisticsInput = parse(body)?;
        let namespace = input
            .namespace
            .ok_or_else(|| CloudWatchError::MissingParameter("Namespace".into()))?;
        let name = input
            .metric_name
            .ok_or_else(|| CloudWatchError::MissingParameter("MetricName".into()))?;
        let (start, end) = Window::range(input.start_time, input.end_time)?;
        let window = Window {
            start,
            end,
            period: period(input.period, "Period")?,
        };
        if !input.extended_statistics.is_empty() {
            return Err(CloudWatchError::InvalidParameterValue(
                "imds computes no extended statistics (percentiles).".into(),
            ));
        }
        if input.statistics.is_empty() {
            return Err(CloudWatchError::MissingParameter(
                "Statistics or ExtendedStatistics".into(),
            ));
        }
        let statistics = input
            .statistics
            .iter()
            .map(|s| {
                Statistic::parse(s).ok_or_else(|| {
                    CloudWatchError::InvalidParameterValue(format!(
                        "The parameter Statistics has the value {s}, which is not one of SampleCount, Average, Sum, Minimum, Maximum."
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for dimension in &input.dimensions {
            if dimension.name.is_none() || dimension.value.is_none() {
                return Err(CloudWatchError::MissingParameter(
                    "Dimensions.member.Name and Dimensions.member.Value".into(),
                ));
            }
        }
        if window.periods() > MAX_DATAPOINTS {
            return Err(CloudWatchError::InvalidParameterCombination(format!(
                "You have requested up to {} datapoints, which exceeds the limit of {MAX_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, or decreasing the time range.",
                window.periods()
            )));
        }
        let unit_matches = input.unit.as_deref().is_none_or(|u| u == "Count");
        let series = match unit_matches {
            true => self.series(&namespace, &name, &input.dimensions, window),
            false => BTreeMap::new(),
        };
        let datapoints: Vec<Value> = series
            .iter()
            .map(|(at, samples)| {
                let mut point = json!({ "Timestamp": at, "Unit": "Count" });
                for statistic in &statistics {
                    point[statistic.name()] = json!(samples.value(*statistic));
                }
                point
            })
            .collect();
        Ok(json!({ "Label": name, "Datapoints": datapoints }))
    }

    fn get_metric_data(&self, body: &[u8]) -> Result<Value, CloudWatchError> {
        let input: GetMetricDataInput = parse(body)?;
        let (start, end) = Window::range(input.start_time, input.end_time)?;
        let descending = match input.scan_by.as_deref() {
            None | Some("TimestampDescending") => true,
            Some("TimestampAscending") => false,
            Some(other) => {
                return Err(CloudWatchError::InvalidParameterValue(format!(
                    "The value {other} for parameter ScanBy is not valid."
                )))
            }
        };
        if input.metric_data_queries.is_empty() {
            return Err(CloudWatchError::MissingParameter(
                "MetricDataQueries".into(),
            ));
        }
        if input.metric_data_queries.len() > MAX_QUERIES {
            return Err(CloudWatchError::InvalidParameterValue(format!(
                "The collection MetricDataQueries must not have a size greater than {MAX_QUERIES}."
            )));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut results = Vec::new();
        for query in &input.metric_data_queries {
            let id = query
                .id
                .as_deref()
                .ok_or_else(|| CloudWatchError::MissingParameter("MetricDataQueries.Id".into()))?;
            let well_formed = id.starts_with(|c: char| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !well_formed {
                return Err(CloudWatchError::InvalidParameterValue(format!(
                    "The value {id} for parameter MetricDataQueries.Id is not valid: it must start with a lowercase letter and contain only letters, numbers and underscores."
                )));
            }
            if !ids.insert(id) {
                return Err(CloudWatchError::InvalidParameterValue(format!(
                    "The values for parameter id in MetricDataQueries are not unique: {id}."
                )));
            }
            let stat = match (&query.metric_stat, &query.expression) {
                (Some(stat), None) => stat,
                (None, Some(_)) => {
                    return Err(CloudWatchError::InvalidParameterValue(
                        "imds evaluates no metric math expressions; use MetricStat.".into(),
                    ))
                }
                _ => {
                    return Err(CloudWatchError::InvalidParameterCombination(format!(
                    "The MetricDataQuery {id} must have exactly one of MetricStat and Expression."
                )))
                }
            };
            let metric = stat.metric.as_ref().ok_or_else(|| {
                CloudWatchError::MissingParameter("MetricDataQueries.MetricStat.Metric".into())
            })?;
            let namespace = metric.namespace.as_deref().ok_or_else(|| {
                CloudWatchError::MissingParameter(
                    "MetricDataQueries.MetricStat.Metric.Namespace".into(),
                )
            })?;
            let name = metric.metric_name.as_deref().ok_or_else(|| {
                CloudWatchError::MissingParameter(
                    "MetricDataQueries.MetricStat.Metric.MetricName".into(),
                )
            })?;
            let statistic = stat.stat.as_deref().ok_or_else(|| {
                CloudWatchError::MissingParameter("MetricDataQueries.MetricStat.Stat".into())
            })?;
            let statistic = Statistic::parse(statistic).ok_or_else(|| {
                CloudWatchError::InvalidParameterValue(format!(
                    "The value {statistic} for parameter MetricDataQueries.MetricStat.Stat is not one of SampleCount, Average, Sum, Minimum, Maximum."
                ))
            })?;
            let window = Window {
                start,
                end,
                period: period(stat.period, "MetricDataQueries.MetricStat.Period")?,
            };
            if query.return_data == Some(false) {
                continue;
            }
            let unit_matches = stat.unit.as_deref().is_none_or(|u| u == "Count");
            let series = match unit_matches {
                true => self.series(namespace, name, &metric.dimensions, window),
                false => BTreeMap::new(),
            };
            let mut points: Vec<(i64, f64)> = series
                .iter()
                .map(|(at, samples)| (*at, samples.value(statistic)))
                .collect();
            if descending {
                points.reverse();
            }
            results.push(json!({
                "Id": id,
                "Label": query.label.as_deref().unwrap_or(name),
                "Timestamps": points.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
                "Values": points.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
                "StatusCode": "Complete",
            }));
        }
        Ok(json!({ "MetricDataResults": results, "Messages": [] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_its_periods_from_the_minute_of_its_start() {
        let window = Window {
            start: 90,
            end: 3600,
            period: 300,
        };
        assert_eq!(window.first(), 60);
        assert_eq!(window.periods(), 12);
    }

    #[test]
    fn periods_must_be_multiples_of_a_minute() {
        assert_eq!(period(Some(120), "Period"), Ok(120));
        assert!(matches!(
            period(Some(90), "Period"),
            Err(CloudWatchError::InvalidParameterValue(_))
        ));
        assert!(matches!(
            period(None, "Period"),
            Err(CloudWatchError::MissingParameter(_))
        ));
    }

    #[test]
    fn samples_give_each_statistic() {
        let mut samples = Samples::default();
        for value in [3, 1, 5] {
            samples.add(value);
        }
        assert_eq!(samples.value(Statistic::Sum), 9.0);
        assert_eq!(samples.value(Statistic::SampleCount), 3.0);
        assert_eq!(samples.value(Statistic::Maximum), 5.0);
        assert_eq!(samples.value(Statistic::Minimum), 1.0);
        assert_eq!(samples.value(Statistic::Average), 3.0);
    }
}
