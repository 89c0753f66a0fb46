//! Cron expressions for `engine.schedule`: the five classic fields (minute, hour, day of
//! month, month, day of week) with lists, ranges, steps and names, and the `@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly` shorthands, evaluated in an IANA time zone.
//!
//! ```
//! use ramus_engine::cron::Cron;
//! let c = Cron::parse("0 9 * * 1", Some("Europe/Paris")).unwrap();
//! // Thursday 2026-01-01 00:00 UTC → Monday 2026-01-05 09:00 Paris (08:00 UTC).
//! assert_eq!(c.next_after(1_767_225_600_000), Some(1_767_600_000_000));
//! ```

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::error::EngineError;

/// A parsed cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month and day of week both restricted: a day matching either runs (as cron
    /// has always done).
    either_day: bool,
    tz: TimeZone,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn invalid(expr: &str, why: String) -> EngineError {
    EngineError::Invalid(format!("schedule: the cron expression {expr:?} {why}"))
}

/// One field as a bit set of the values it allows, and whether it was `*`.
fn field(
    expr: &str,
    text: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), EngineError> {
    let value = |s: &str| -> Result<u32, EngineError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| invalid(expr, format!("has {s:?} in its {what} field")))?;
        if v < min || v > max {
            return Err(invalid(
                expr,
                format!("has {v} in its {what} field, outside {min}-{max}"),
            ));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|&s| s >= 1).ok_or_else(|| {
                    invalid(expr, format!("has a bad step {s:?} in its {what} field"))
                })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (lo, hi) = (value(a)?, value(b)?);
            // Sunday ends a day-of-week range as 7 (`fri-sun`, `5-0`).
            let hi = if what == "day-of-week" && hi == 0 {
                7
            } else {
                hi
            };
            (lo, hi)
        } else {
            let v = value(range)?;
            (v, if step > 1 { max } else { v })
        };
        if lo > hi {
            return Err(invalid(
                expr,
                format!("has the empty range {range:?} in its {what} field"),
            ));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, text == "*" || text == "?"))
}

impl Cron {
    /// Parse `expr` (five fields, or a `@daily`-style shorthand) for `timezone` (an IANA
    /// name; UTC when `None`).
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Cron, EngineError> {
        let tz = match timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| {
                EngineError::Invalid(format!("schedule: unknown time zone {name:?}: {e}"))
            })?,
        };
        let expanded = match expr.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [m, h, dom, mon, dow] = parts[..] else {
            return Err(invalid(
                expr,
                format!(
                    "has {} fields; it takes five (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly",
                    parts.len()
                ),
            ));
        };
        let (minutes, _) = field(expr, m, "minute", 0, 59, &[], 0)?;
        let (hours, _) = field(expr, h, "hour", 0, 23, &[], 0)?;
        let (days, any_day) = field(expr, dom, "day-of-month", 1, 31, &[], 0)?;
        let (months, _) = field(expr, mon, "month", 1, 12, &MONTHS, 1)?;
        let (weekdays, any_weekday) = field(expr, dow, "day-of-week", 0, 7, &WEEKDAYS, 0)?;
        // Sunday is 0 and 7: fold 7 into 0.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day: !any_day && !any_weekday,
            tz,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first tick strictly after `after_ms` (ms since the epoch), or `None` when none
    /// comes within ten years (`0 0 30 2 *`).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = Timestamp::from_millisecond(after_ms).ok()?;
        let local = after.to_zoned(self.tz.clone()).datetime();
        // The next whole minute after `after`, in local time.
        let mut t = local
            .checked_add(jiff::Span::new().minutes(1))
            .ok()?
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        let limit = local.year() as i32 + 10;
        while (t.year() as i32) <= limit {
            if self.months & (1 << t.month()) == 0 {
                t = first_of_next_month(t)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = next_hour(t)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
                continue;
            }
            // A local time skipped by a DST change runs at the first instant after the gap;
            // one repeated by it runs once, at its first occurrence.
            let ms = self
                .tz
                .to_ambiguous_zoned(t)
                .compatible()
                .ok()?
                .timestamp()
                .as_millisecond();
            if ms > after_ms {
                return Some(ms);
            }
            t = t.checked_add(jiff::Span::new().minutes(1)).ok()?;
        }
        None
    }
}

fn first_of_next_month(t: DateTime) -> Option<DateTime> {
    let first = t.date().first_of_month();
    let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
    Some(next.to_datetime(jiff::civil::Time::midnight()))
}

fn next_hour(t: DateTime) -> Option<DateTime> {
    let base = t
        .with()
        .minute(0)
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .ok()?;
    base.checked_add(jiff::Span::new().hours(1)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let c = Cron::parse("*/15 9-17 * * mon-fri", None).unwrap();
        assert_eq!(c.next_after(T), Some(at("2026-01-01T09:00:00Z")));
        assert_eq!(
            c.next_after(at("2026-01-01T09:00:00Z")),
            Some(at("2026-01-01T09:15:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-01-02T17:45:00Z")),
            Some(at("2026-01-05T09:00:00Z"))
        );
        let c = Cron::parse("0 0 1,15 feb *", None).unwrap();
        assert_eq!(c.next_after(T), Some(at("2026-02-01T00:00:00Z")));
        assert_eq!(
            Cron::parse("@hourly", None).unwrap().next_after(T),
            Some(T + 3_600_000)
        );
        // Day of month and day of week both given: either.
        let c = Cron::parse("0 0 13 * 5", None).unwrap();
        assert_eq!(c.next_after(T), Some(at("2026-01-02T00:00:00Z")));
        assert_eq!(Cron::parse("0 0 30 2 *", None).unwrap().next_after(T), None);
        // Sunday as 7, and ranges that end on it.
        let sat = at("2026-01-03T00:00:00Z");
        for e in ["0 0 * * 7", "0 0 * * 5-7", "0 0 * * fri-sun", "0 0 * * 6-0"] {
            let c = Cron::parse(e, None).unwrap();
            assert_eq!(c.next_after(sat), Some(at("2026-01-04T00:00:00Z")), "{e}");
        }
        let c = Cron::parse("0 0 ? * 1-7", None).unwrap();
        assert_eq!(c.next_after(T), Some(at("2026-01-02T00:00:00Z")));
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let c = Cron::parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(c.next_after(T), Some(at("2026-01-01T14:00:00Z")));
        // After the change to summer time (2026-03-08), 9:00 is 13:00 UTC.
        assert_eq!(
            c.next_after(at("2026-03-09T00:00:00Z")),
            Some(at("2026-03-09T13:00:00Z"))
        );
        // 02:30 does not exist on 2026-03-08 in New York: it runs at 03:30 EDT.
        let c = Cron::parse("30 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            c.next_after(at("2026-03-08T05:00:00Z")),
            Some(at("2026-03-08T07:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_named() {
        let e = |s: &str, tz: Option<&str>| Cron::parse(s, tz).unwrap_err().to_string();
        assert!(e("0 9 * *", None).contains("has 4 fields"));
        assert!(e("61 * * * *", None).contains("61 in its minute field, outside 0-59"));
        assert!(e("0 9 * * funday", None).contains("\"funday\" in its day-of-week field"));
        assert!(e("*/0 * * * *", None).contains("bad step"));
        assert!(e("0 9 * * *", Some("Mars/Olympus")).contains("unknown time zone \"Mars/Olympus\""));
    }
}
