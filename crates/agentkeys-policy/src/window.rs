//! A rule's conditions on time and on use: a window of hours (which may wrap past midnight) on
//! some days, in a named time zone, and a rate (N per minute, hour or day).

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

/// When a rule applies: hours and days in a time zone.
#[derive(Debug, Clone)]
pub(crate) struct TimeWindow {
    /// Minutes after midnight: `[start, end)`; `end <= start` wraps past midnight.
    pub hours: Option<(u16, u16)>,
    /// Days of the week (Monday = 0); for a window that wraps, the day it starts on.
    pub days: Option<[bool; 7]>,
    pub tz: TimeZone,
    pub tz_name: String,
}

impl TimeWindow {
    pub fn contains(&self, at: Timestamp) -> bool {
        let zoned = self.tz.to_datetime(at);
        let minute = u16::from(zoned.hour() as u8) * 60 + u16::from(zoned.minute() as u8);
        let day = weekday_index(zoned.weekday());
        let on = |day: usize| self.days.is_none_or(|days| days[day]);
        match self.hours {
            None => on(day),
            Some((start, end)) if start < end => (start..end).contains(&minute) && on(day),
            // Wraps: the evening part belongs to today, the morning part to yesterday's window.
            Some((start, end)) => (minute >= start && on(day)) || (minute < end && on((day + 6) % 7)),
        }
    }
}

fn weekday_index(day: Weekday) -> usize {
    usize::from(day.to_monday_zero_offset() as u8)
}

pub(crate) const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `HH:MM-HH:MM` (24-hour; the end may be `24:00`).
pub(crate) fn parse_hours(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("hours '{text}' is not HH:MM-HH:MM (24-hour, e.g. \"20:00-07:00\")");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let minute = |part: &str, end: bool| -> Option<u16> {
        let (h, m) = part.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (end && h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (minute(start, false).ok_or_else(bad)?, minute(end, true).ok_or_else(bad)?);
    if start == end % (24 * 60) && end != 24 * 60 {
        return Err(format!("hours '{text}' is empty (start and end are the same); leave hours out for all day"));
    }
    Ok((start, end % (24 * 60)))
}

pub(crate) fn parse_days(days: &[String]) -> Result<[bool; 7], String> {
    let mut set = [false; 7];
    for day in days {
        let index = DAY_NAMES
            .iter()
            .position(|name| name == day)
            .ok_or_else(|| format!("day '{day}' is not one of {}", DAY_NAMES.join(", ")))?;
        if set[index] {
            return Err(format!("day '{day}' is listed twice"));
        }
        set[index] = true;
    }
    if days.is_empty() {
        return Err("days is empty, so the rule never matches; leave days out for every day".to_owned());
    }
    Ok(set)
}

pub(crate) fn parse_tz(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!(
            "time zone '{name}' is not an IANA time zone name (e.g. \"Europe/Berlin\", \"America/New_York\", \"UTC\")"
        )
    })
}

/// The span a rate counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateWindow {
    Minute,
    Hour,
    Day,
}

impl RateWindow {
    pub fn millis(self) -> i64 {
        match self {
            RateWindow::Minute => 60_000,
            RateWindow::Hour => 3_600_000,
            RateWindow::Day => 86_400_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RateWindow::Minute => "m",
            RateWindow::Hour => "h",
            RateWindow::Day => "d",
        }
    }
}

/// `N/m`, `N/h` or `N/d`: the rule matches a use once the agent made `N` uses of the service in
/// the span before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    pub count: u32,
    pub per: RateWindow,
}

/// Most uses a rate may count.
pub(crate) const RATE_MAX: u32 = 1_000_000;

impl Rate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("rate '{text}' is not N/m, N/h or N/d (e.g. \"30/h\")");
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let per = match per.trim() {
            "m" | "min" | "minute" => RateWindow::Minute,
            "h" | "hour" => RateWindow::Hour,
            "d" | "day" => RateWindow::Day,
            _ => return Err(bad()),
        };
        let count = count.trim();
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let count: u32 = count.parse().map_err(|_| bad())?;
        if count == 0 || count > RATE_MAX {
            return Err(format!("rate '{text}' must count 1 to {RATE_MAX} uses (a rule for every use needs no rate)"));
        }
        Ok(Self { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.per.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(hours: &str, days: Option<&[&str]>, tz: &str) -> TimeWindow {
        TimeWindow {
            hours: Some(parse_hours(hours).unwrap()),
            days: days.map(|d| parse_days(&d.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()),
            tz: parse_tz(tz).unwrap(),
            tz_name: tz.to_owned(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn hours_wrap_past_midnight_in_the_rules_time_zone() {
        let night = window("20:00-07:00", None, "Europe/Berlin");
        // 2026-12-01 is a Tuesday; Berlin is UTC+1 in December.
        assert!(night.contains(at("2026-12-01T19:30:00Z"))); // 20:30 Berlin
        assert!(night.contains(at("2026-12-02T05:59:00Z"))); // 06:59 Berlin
        assert!(!night.contains(at("2026-12-02T06:00:00Z"))); // 07:00 Berlin: the end is open
        assert!(!night.contains(at("2026-12-01T12:00:00Z")));
        assert!(night.contains(at("2026-12-01T19:00:00Z"))); // 20:00 Berlin: the start is closed
    }

    #[test]
    fn a_wrapping_window_belongs_to_the_day_it_starts() {
        let friday_night = window("22:00-06:00", Some(&["fri"]), "UTC");
        assert!(friday_night.contains(at("2026-12-04T23:00:00Z"))); // Friday 23:00
        assert!(friday_night.contains(at("2026-12-05T05:00:00Z"))); // Saturday 05:00
        assert!(!friday_night.contains(at("2026-12-05T23:00:00Z"))); // Saturday 23:00
        assert!(!friday_night.contains(at("2026-12-04T05:00:00Z"))); // Friday 05:00: Thursday's
    }

    #[test]
    fn hours_and_rates_parse_strictly() {
        assert_eq!(parse_hours("09:00-17:30").unwrap(), (540, 1050));
        assert_eq!(parse_hours("18:00-24:00").unwrap(), (1080, 0));
        // A window may start in the last hour of the day (found by the e2e test at 23:43).
        assert_eq!(parse_hours("23:30-00:30").unwrap(), (1410, 30));
        for bad in ["9:00-17:00", "09:00", "25:00-01:00", "09:60-10:00", "09:00-09:00", "ab:cd-ef:gh", "24:00-01:00"] {
            assert!(parse_hours(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::parse("30/h").unwrap(), Rate { count: 30, per: RateWindow::Hour });
        for bad in ["0/h", "30", "30/w", "-1/h", "1e3/h", "1000001/d", "/h"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_tz("Mars/Olympus").is_err());
        assert!(parse_days(&["mon".into(), "mon".into()]).is_err());
        assert!(parse_days(&["monday".into()]).is_err());
    }
}
