//! Sample sets and how numbers are printed.

use std::time::Duration;

/// Seconds of a sample set: median, min, max, and nearest-rank percentiles.
#[derive(Clone, Default, Debug)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    /// Nearest-rank percentile `p` (0–100); panics on an empty set.
    pub fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
    /// The middle sample, or the mean of the two middle ones.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let m = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[m - 1] + v[m]) / 2.0
        } else {
            v[m]
        }
    }
    pub fn min(&self) -> f64 {
        self.sorted()[0]
    }
    pub fn max(&self) -> f64 {
        *self.sorted().last().expect("samples")
    }
    /// `median (min–max)` in the given unit; just the value for a single sample.
    pub fn show(&self, unit: Unit) -> String {
        if self.0.len() == 1 {
            return unit.fmt(self.0[0]);
        }
        format!(
            "{} ({}–{})",
            unit.fmt(self.median()),
            unit.fmt(self.min()),
            unit.fmt(self.max())
        )
    }
}

/// How a duration in seconds is shown.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// `12.34 s`
    S,
    /// `12.3 ms`
    Ms,
}

impl Unit {
    pub fn fmt(self, secs: f64) -> String {
        match self {
            Unit::S => format!("{secs:.2} s"),
            Unit::Ms => format!("{:.1} ms", secs * 1000.0),
        }
    }
}

/// About three significant digits: `1234`, `123`, `12.3`, `1.23`, `0.123`.
pub fn sig3(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `10,000` for 10000.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Megabytes (MiB, as `/proc` counts) of a KiB figure: `98.0 MB`.
pub fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}
