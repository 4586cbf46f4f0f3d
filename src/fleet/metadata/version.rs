//! The API versions IMDS answers under (`GET /` lists them), oldest first.

/// Every version real IMDS lists at `GET /`, oldest first; `latest` follows them.
pub const API_VERSIONS: [&str; 29] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-07-09",
    "2022-09-24",
    "latest",
];

/// One API version, as the position of its name in [`API_VERSIONS`]; `latest` is the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(u8);

impl ApiVersion {
    /// `latest`: every category.
    pub const LATEST: ApiVersion = ApiVersion(API_VERSIONS.len() as u8 - 1);
    /// `1.0`: the first version.
    pub const OLDEST: ApiVersion = ApiVersion(0);

    /// The version named exactly `name` (a path's first segment), if IMDS knows it.
    pub fn from_name(name: &str) -> Option<ApiVersion> {
        if name == "latest" {
            return Some(ApiVersion::LATEST);
        }
        API_VERSIONS
            .iter()
            .position(|v| *v == name)
            .map(|i| ApiVersion(i as u8))
    }

    /// The first listed version that includes a category released on `date` (`YYYY-MM-DD` or `1.0`).
    ///
    /// Categories released between two listed versions appear from the next listed one.
    pub const fn first_including(date: &str) -> ApiVersion {
        let mut i = 0;
        while i < API_VERSIONS.len() - 1 {
            if !const_str_less(API_VERSIONS[i], date) {
                return ApiVersion(i as u8);
            }
            i += 1;
        }
        ApiVersion::LATEST
    }

    /// All versions, oldest first, `latest` last.
    pub fn all() -> impl Iterator<Item = ApiVersion> {
        (0..API_VERSIONS.len() as u8).map(ApiVersion)
    }

    /// The version's name as it appears in paths.
    pub fn name(self) -> &'static str {
        API_VERSIONS[self.0 as usize]
    }
}

/// `a < b` for ASCII strings, usable in `const` context (`1.0` sorts before every date).
const fn const_str_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_by_exact_name() {
        assert_eq!(ApiVersion::from_name("latest"), Some(ApiVersion::LATEST));
        assert_eq!(ApiVersion::from_name("1.0"), Some(ApiVersion::OLDEST));
        assert_eq!(
            ApiVersion::from_name("2021-03-23").unwrap().name(),
            "2021-03-23"
        );
        assert_eq!(ApiVersion::from_name("2021-03-24"), None);
        assert_eq!(ApiVersion::from_name("Latest"), None);
    }

    #[test]
    fn categories_between_listed_versions_appear_in_the_next_one() {
        assert_eq!(ApiVersion::first_including("1.0"), ApiVersion::OLDEST);
        assert_eq!(
            ApiVersion::first_including("2018-05-23").name(),
            "2018-08-17"
        );
        assert_eq!(
            ApiVersion::first_including("2020-08-24").name(),
            "2020-10-27"
        );
        assert_eq!(
            ApiVersion::first_including("2021-07-15").name(),
            "2021-07-15"
        );
        assert_eq!(
            ApiVersion::first_including("2030-01-01"),
            ApiVersion::LATEST
        );
    }

    #[test]
    fn listed_versions_are_in_order() {
        for pair in API_VERSIONS[..API_VERSIONS.len() - 1].windows(2) {
            assert!(const_str_less(pair[0], pair[1]), "{pair:?}");
        }
    }
}
