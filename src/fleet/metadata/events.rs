//! The event categories of one moment: `spot/`, `events/maintenance/`,
//! `events/recommendations/rebalance` and `autoscaling/target-lifecycle-state`, in IMDS' formats.
//! Absent entries answer 404 and are not listed, as on EC2 before anything is announced.

use serde::Serialize;
use time::macros::format_description;

use super::{render, Leaf, TreeBuilder};
use crate::fleet::events::{datetime, rfc3339, EventsNow, MaintenanceEvent, Outcome};

/// Adds what `events` shows to the tree.
pub(super) fn add(b: &mut TreeBuilder, events: &EventsNow<'_>) {
    if let Some(spot) = events.spot {
        let time = rfc3339(datetime(spot.at));
        b.text(
            "meta-data/spot/instance-action",
            "2016-11-15",
            format!(
                "{{\"action\": \"{}\", \"time\": \"{time}\"}}",
                spot.action.as_str()
            ),
        );
        if spot.action == crate::fleet::events::SpotAction::Terminate {
            b.text("meta-data/spot/termination-time", "2014-11-05", time);
        }
    }
    if let Some(notice) = events.rebalance {
        b.text(
            "meta-data/events/recommendations/rebalance",
            "2020-10-27",
            format!("{{\"noticeTime\": \"{}\"}}", rfc3339(datetime(notice))),
        );
    }
    let scheduled: Vec<Event<'_>> = events
        .scheduled
        .iter()
        .map(|e| Event::of(e, None))
        .collect();
    let history: Vec<Event<'_>> = events
        .history
        .iter()
        .map(|(e, outcome)| Event::of(e, Some(*outcome)))
        .collect();
    b.leaf(
        "meta-data/events/maintenance/scheduled",
        "2018-08-17",
        Leaf::Text(render::json(&scheduled)),
    )
    .leaf(
        "meta-data/events/maintenance/history",
        "2018-08-17",
        Leaf::Text(render::json(&history)),
    );
    if let Some(state) = events.lifecycle {
        b.text(
            "meta-data/autoscaling/target-lifecycle-state",
            "2021-07-15",
            state.as_str(),
        );
    }
}

/// One event in `scheduled` or `history`, fields in IMDS' order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Event<'a> {
    not_before: String,
    code: &'a str,
    description: String,
    event_id: &'a str,
    not_after: String,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before_deadline: Option<String>,
}

impl<'a> Event<'a> {
    fn of(event: &'a MaintenanceEvent, outcome: Option<Outcome>) -> Event<'a> {
        let (state, prefix) = match outcome {
            None => ("active", ""),
            Some(Outcome::Completed) => ("completed", "[Completed] "),
            Some(Outcome::Canceled) => ("canceled", "[Canceled] "),
        };
        Event {
            not_before: gmt(event.not_before),
            code: event.code.as_str(),
            description: format!("{prefix}{}", event.description),
            event_id: &event.id,
            not_after: gmt(event.not_after),
            state,
            not_before_deadline: event.not_before_deadline.map(gmt),
        }
    }
}

/// `21 Jan 2019 09:00:43 GMT`: the date form of scheduled events, always UTC.
pub fn gmt(millis: u64) -> String {
    datetime(millis)
        .format(format_description!(
            "[day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .expect("formatting a UTC date with a fixed description cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::events::{EventsConfig, Schedule};
    use crate::fleet::metadata::version::ApiVersion;
    use crate::fleet::metadata::Found;

    fn body(tree: &crate::fleet::metadata::MetadataTree, path: &str) -> Option<String> {
        match tree.find(
            ApiVersion::LATEST,
            path.split('/').filter(|s| !s.is_empty()),
        )? {
            Found::Leaf(crate::fleet::metadata::Leaf::Text(b)) | Found::Listing(b) => {
                Some(String::from_utf8(b.to_vec()).unwrap())
            }
            Found::Leaf(_) => None,
        }
    }

    #[test]
    fn event_documents_have_imds_formats() {
        let config: EventsConfig = toml::from_str(
            "rebalance = \"2027-01-21T08:00:00Z\"\n\
             [spot]\nnotice = \"2027-01-21T08:20:00Z\"\n\
             [[maintenance]]\nid = \"instance-event-0d59937288b749b32\"\ncode = \"system-reboot\"\n\
             not_before = \"2027-01-21T09:00:43Z\"\nnot_after = \"2027-01-21T09:17:23Z\"\n\
             [[maintenance]]\ncode = \"instance-stop\"\nnot_before = \"2027-02-01T00:00:00Z\"\n\
             not_before_deadline = \"2027-02-05T00:00:00Z\"\ncanceled = \"2027-01-21T08:30:00Z\"\n",
        )
        .unwrap();
        let schedule = Schedule::resolve(&config, 0, "i-1");
        let mut b = TreeBuilder::default();
        add(&mut b, &schedule.at(1_800_521_400_000)); // 2027-01-21T08:50:00Z
        let tree = b.build();
        assert_eq!(
            body(&tree, "meta-data/spot/instance-action").unwrap(),
            "{\"action\": \"terminate\", \"time\": \"2027-01-21T08:22:00Z\"}"
        );
        assert_eq!(
            body(&tree, "meta-data/spot/termination-time").unwrap(),
            "2027-01-21T08:22:00Z"
        );
        assert_eq!(
            body(&tree, "meta-data/events/recommendations/rebalance").unwrap(),
            "{\"noticeTime\": \"2027-01-21T08:00:00Z\"}"
        );
        assert_eq!(
            body(&tree, "meta-data/events/maintenance/scheduled").unwrap(),
            "[\n  {\n    \"NotBefore\" : \"21 Jan 2027 09:00:43 GMT\",\n    \"Code\" : \"system-reboot\",\n    \"Description\" : \"scheduled reboot\",\n    \"EventId\" : \"instance-event-0d59937288b749b32\",\n    \"NotAfter\" : \"21 Jan 2027 09:17:23 GMT\",\n    \"State\" : \"active\"\n  }\n]"
        );
        let history = body(&tree, "meta-data/events/maintenance/history").unwrap();
        assert!(
            history.contains("\"Description\" : \"[Canceled] "),
            "{history}"
        );
        assert!(history.contains("\"State\" : \"canceled\""), "{history}");
        assert!(history.contains("\"NotBeforeDeadline\" : \"05 Feb 2027 00:00:00 GMT\""));
        assert_eq!(
            body(&tree, "meta-data/autoscaling/target-lifecycle-state"),
            None
        );
    }

    #[test]
    fn before_anything_is_announced_only_empty_maintenance_lists_exist() {
        let mut b = TreeBuilder::default();
        add(&mut b, &Schedule::default().at(0));
        let tree = b.build();
        assert_eq!(body(&tree, "meta-data/spot/instance-action"), None);
        assert_eq!(body(&tree, "meta-data/events").unwrap(), "maintenance/");
        assert_eq!(
            body(&tree, "meta-data/events/maintenance/scheduled").unwrap(),
            "[]"
        );
    }
}
