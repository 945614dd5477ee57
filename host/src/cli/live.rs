//! The live view of `tapeline run` on a terminal: each stage's state and load, each edge's
//! queue depth and drops, meter levels, and for finite sources a progress bar with ETA. Drawn
//! from monitoring snapshots on the monitoring thread; never shown when stdout is not a
//! terminal or with `--quiet`.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::text::{put, putln};
use crate::coordinator::monitor::Snapshot;
use crate::coordinator::summary::stats_text;

/// Characters of a queue-depth or level bar.
const BAR: usize = 12;

pub struct LiveView {
    _multi: MultiProgress,
    table: ProgressBar,
    /// Present when some source has a known length.
    progress: Option<ProgressBar>,
    name: String,
}

impl LiveView {
    /// `total_frames`: frames the finite sources will produce in all (None: endless).
    pub fn new(name: &str, total_frames: Option<u64>) -> LiveView {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
        let table = multi.add(ProgressBar::new_spinner());
        table.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        let progress = total_frames.map(|total| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "  [{bar:40}] {percent:>3}%  {pos}/{len} frames  ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        LiveView {
            _multi: multi,
            table,
            progress,
            name: name.to_string(),
        }
    }

    pub fn update(&self, snap: &Snapshot) {
        self.table.set_message(render(&self.name, snap));
        if let Some(bar) = &self.progress {
            let done: u64 = snap
                .stages
                .iter()
                .filter(|s| s.length_frames.is_some())
                .map(|s| s.frames_out)
                .sum();
            bar.set_position(done);
        }
    }

    /// Remove the view before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
        self.table.finish_and_clear();
    }
}

/// The stage and edge table for one snapshot.
pub fn render(name: &str, snap: &Snapshot) -> String {
    let mut s = String::new();
    putln!(
        s,
        "{name}: {}  {}",
        snap.pipeline,
        fmt_elapsed(Duration::from_millis(snap.t_ms))
    );
    for st in &snap.stages {
        put!(
            s,
            "  {:<12} {:<8} {:<11} {:>11} frames  {:>5.1}% of audio time",
            st.id,
            st.kind,
            st.state,
            if st.kind == "capture" {
                st.frames_out
            } else {
                st.frames_in
            },
            st.budget_share * 100.0
        );
        if st.errors > 0 {
            put!(s, "  {} error(s)", st.errors);
        }
        if st.restarts > 0 {
            put!(s, "  {} restart(s)", st.restarts);
        }
        if st.gaps > 0 {
            put!(s, "  {} gap(s)", st.gaps);
        }
        if let (Some(call), Some(ms)) = (&st.in_call, st.in_call_ms) {
            put!(s, "  in {call} for {ms} ms");
        }
        if let Some(l) = st.latency_ms_mean {
            put!(s, "  latency {l:.1} ms");
        }
        s.push('\n');
        if let Some(stats) = stats_text(&st.stats) {
            putln!(s, "      {stats}");
        }
        for (c, l) in st.levels.iter().enumerate() {
            putln!(
                s,
                "      ch{c:<2} [{}] peak {:>6.1} dBFS  rms {:>6.1} dBFS",
                level_bar(l.peak_db),
                l.peak_db,
                l.rms_db
            );
        }
    }
    for e in snap.edges.iter().map(|v| &v.edge) {
        let dropped = e.dropped_overflow + e.dropped_stage_error + e.dropped_shutdown;
        putln!(
            s,
            "  {:<32} [{}] {:>3}/{:<3} blocks  dropped {}",
            e.label,
            fill_bar(e.depth as f64 / e.capacity.max(1) as f64),
            e.depth,
            e.capacity,
            dropped
        );
    }
    s.truncate(s.trim_end().len());
    s
}

fn fill_bar(fraction: f64) -> String {
    let n = (fraction.clamp(0.0, 1.0) * BAR as f64).round() as usize;
    format!("{}{}", "#".repeat(n), ".".repeat(BAR - n))
}

/// -60 dBFS (empty) to 0 dBFS (full).
fn level_bar(db: f32) -> String {
    fill_bar((f64::from(db) + 60.0) / 60.0)
}

fn fmt_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
