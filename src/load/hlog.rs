//! The HdrHistogram interval log of a run (`latency.hlog`), written as each second
//! closes, so a run of any length keeps no per-second histograms in memory.
//!
//! One interval per aggregator tick: the corrected end-to-end latency of every delivery
//! in it, in microseconds (the log's max-value divisor makes its text show
//! milliseconds). Any HdrHistogram tool reads it (`HistogramLogProcessor`, hdr-plot).

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// The file name inside the report directory.
pub const FILE: &str = "latency.hlog";

/// An open interval log.
pub struct IntervalLog {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    /// Serialized intervals written so far.
    pub intervals: u64,
    failed: Option<String>,
}

impl IntervalLog {
    /// Creates `<dir>/latency.hlog` and writes the log's header.
    pub fn create(dir: &Path) -> std::io::Result<IntervalLog> {
        std::fs::create_dir_all(dir)?;
        let mut out = BufWriter::new(File::create(dir.join(FILE))?);
        let mut serializer = V2DeflateSerializer::new();
        // The builder writes the header; intervals are appended one by one after it.
        IntervalLogWriterBuilder::new()
            .add_comment(
                "stompede end-to-end latency (corrected), microseconds, one interval per second",
            )
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        Ok(IntervalLog {
            out,
            serializer,
            intervals: 0,
            failed: None,
        })
    }

    /// Appends one interval starting `start_s` seconds after the run's start.
    pub fn write(&mut self, start_s: f64, length_s: f64, h: &Histogram<u64>) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.write_line(start_s, length_s, h) {
            self.failed = Some(e.to_string());
        }
    }

    fn write_line(
        &mut self,
        start_s: f64,
        length_s: f64,
        h: &Histogram<u64>,
    ) -> std::io::Result<()> {
        // The same line IntervalLogWriter::write_histogram writes:
        // start,length,max (÷ divisor),base64 of the V2+deflate histogram.
        let mut bytes = Vec::new();
        self.serializer
            .serialize(h, &mut bytes)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        use base64::Engine as _;
        writeln!(
            self.out,
            "{:.3},{:.3},{:.3},{}",
            start_s.max(0.0),
            length_s.max(0.0),
            h.max() as f64 / 1000.0,
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        )?;
        self.intervals += 1;
        Ok(())
    }

    /// Flushes the file; an error here or earlier is returned once.
    pub fn finish(mut self) -> Result<u64, String> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.out.flush().map_err(|e| e.to_string())?;
        Ok(self.intervals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use std::time::Duration;

    #[test]
    fn intervals_read_back_with_the_standard_reader() {
        let dir = std::env::temp_dir().join(format!("stompede-hlog-{}", std::process::id()));
        let mut log = IntervalLog::create(&dir).expect("create");
        for i in 0..3u64 {
            let mut h = crate::load::stats::histogram();
            for v in 1..=100 {
                h.record(v * 1000 * (i + 1)).expect("record");
            }
            log.write(i as f64, 1.0, &h);
        }
        assert_eq!(log.finish(), Ok(3));
        let text = std::fs::read(dir.join(FILE)).expect("read");
        let mut deserializer = hdrhistogram::serialization::Deserializer::new();
        let mut seen = 0;
        for entry in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(h) = entry.expect("a valid log entry") {
                let decoded: Histogram<u64> = deserializer
                    .deserialize(&mut std::io::Cursor::new(
                        base64::Engine::decode(
                            &base64::engine::general_purpose::STANDARD,
                            h.encoded_histogram(),
                        )
                        .expect("base64"),
                    ))
                    .expect("histogram");
                assert_eq!(decoded.len(), 100);
                assert_eq!(
                    decoded.max(),
                    decoded.highest_equivalent(100_000 * (seen + 1))
                );
                assert_eq!(h.start_timestamp(), Duration::from_secs(seen));
                seen += 1;
            }
        }
        assert_eq!(seen, 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
