//! The write-ahead log: segment files of checksummed records, group-committed.
//!
//! The log is a directory of segments named by a sequence number (`00000000000000000007.wal`).
//! Appends go to the newest segment; [`Wal::rotate`] starts a new one, so that everything
//! written before a head cut sits in older segments, which the store deletes once the block
//! made from that head is durable.
//!
//! Record layout: `len: u32 LE | crc32(payload): u32 LE | payload`. One writer thread owns
//! the file; callers hand it encoded payloads and wait for the sync that covers theirs, so
//! many concurrent appends share one fsync (group commit). On replay a record that fails its
//! checksum with records after it is skipped alone; where framing is lost (a short record, an
//! impossible length) replay of that segment stops. Only the newest segment, the one a crash
//! can tear, is truncated there so later appends follow valid data; every other byte that
//! could not be read is copied aside to `<segment>.<offset>.unread` and logged with the
//! segment path and offset, never dropped.
//!
//! It must not interpret payloads: encoding is the caller's business.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::StoreError;

const HEADER_LEN: usize = 8;
/// Larger records are treated as corruption on replay.
const MAX_RECORD_LEN: u32 = 256 * 1024 * 1024;
/// How many bytes one group commit writes at most before it syncs.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

/// When the log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before acknowledging: nothing acknowledged is lost, even on power loss.
    Always,
    /// fsync every interval: acknowledged data survives a process crash (it is in the
    /// page cache) but up to one interval of it can be lost on power loss or kernel panic.
    Interval(Duration),
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    /// `always`, or `interval` / `interval:<ms>` (default 100 ms).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "interval" => Ok(SyncPolicy::Interval(Duration::from_millis(100))),
            other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err(format!("invalid sync policy {other:?}: expected always, interval or interval:<ms>")),
            },
        }
    }
}

enum Request {
    Append { payload: Vec<u8>, done: mpsc::SyncSender<Result<(), String>> },
    Sync { done: mpsc::SyncSender<Result<(), String>> },
    Rotate { done: mpsc::SyncSender<Result<u64, String>> },
}

/// The segments in `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Bytes of the segments in `dir`: what the log takes, without the `.unread` bytes kept
/// aside, which the disk limit must not make room for by dropping blocks.
pub(crate) fn segments_size(dir: &Path) -> u64 {
    segments(dir).map_or(0, |found| found.iter().map(|(_, path)| std::fs::metadata(path).map_or(0, |m| m.len())).sum())
}

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Deletes every segment numbered below `seq`: their records are in durable blocks.
pub(crate) fn remove_segments_before(dir: &Path, seq: u64) -> Result<(), StoreError> {
    for (s, path) in segments(dir)? {
        if s < seq {
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
    }
    Ok(())
}

pub(crate) struct Wal {
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<thread::JoinHandle<()>>,
}

/// What [`replay`] read and what it could not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub(crate) records: u64,
    /// Damaged records skipped (their bytes are kept aside).
    pub(crate) skipped: u64,
    /// Bytes copied aside into `.unread` files.
    pub(crate) bytes_aside: u64,
}

/// Copies `bytes` of `path` from `offset` to `<segment>.<offset>.unread`: the segment is
/// deleted once a block covers it, and what could not be read must outlive it.
/// Keeps one damaged record (`header` and `payload`) aside with [`keep_aside`] and logs
/// `what` is wrong with it; returns the bytes kept.
fn keep_record_aside(path: &Path, offset: u64, header: &[u8], payload: &[u8], what: &str) -> Result<u64, StoreError> {
    let mut record = header.to_vec();
    record.extend_from_slice(payload);
    let aside = keep_aside(path, offset, &record)?;
    tracing::error!(
        path = %path.display(),
        offset,
        bytes = record.len(),
        aside = %aside.display(),
        "write-ahead log record {what}; its bytes kept aside"
    );
    Ok(record.len() as u64)
}

fn keep_aside(path: &Path, offset: u64, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    let aside = PathBuf::from(format!("{}.{offset}.unread", path.display()));
    std::fs::write(&aside, bytes).map_err(|e| StoreError::io(&aside, e))?;
    Ok(aside)
}

/// Reads every intact record of `path`. A damaged record with records after it is skipped
/// alone and its bytes copied aside (`<segment>.<offset>.unread`); where framing is lost the
/// rest is copied aside likewise, and only the `newest` segment — the one a crash can tear —
/// is truncated there. `each` returns false for a payload it could not use (it does not
/// decode): that record is copied aside too, and not counted in `records`.
pub(crate) fn replay(path: &Path, newest: bool, mut each: impl FnMut(&[u8]) -> bool) -> Result<Replayed, StoreError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut bytes_aside = 0u64;
    let file_len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut valid_len: u64 = 0;
    let mut records = 0;
    let mut skipped = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(StoreError::io(path, e)),
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = valid_len + (HEADER_LEN as u64) + u64::from(len);
        if len > MAX_RECORD_LEN || end > file_len {
            break;
        }
        payload.resize(len as usize, 0);
        if reader.read_exact(&mut payload).is_err() {
            break;
        }
        if crc32fast::hash(&payload) != crc {
            // The last record of the file is a torn write; one with records after it was
            // synced and then damaged: skip it alone rather than everything after it.
            if end == file_len {
                break;
            }
            bytes_aside += keep_record_aside(path, valid_len, &header, &payload, "fails its checksum; skipped")?;
            skipped += 1;
            valid_len = end;
            continue;
        }
        if each(&payload) {
            records += 1;
        } else {
            bytes_aside +=
                keep_record_aside(path, valid_len, &header, &payload, "passes its checksum but cannot be used")?;
        }
        valid_len = end;
    }
    drop(reader);
    if skipped > 0 {
        tracing::error!(path = %path.display(), records = skipped, "skipped damaged write-ahead log records");
    }
    if valid_len < file_len {
        let dropped = file_len - valid_len;
        if !newest || skipped > 0 {
            // Not a crash's torn tail (only the newest segment is written to): keep the
            // unread bytes, since the segment itself is deleted once a block covers it.
            let mut rest = Vec::with_capacity(usize::try_from(dropped).unwrap_or(0));
            let mut f = &file;
            f.seek(SeekFrom::Start(valid_len)).map_err(|e| StoreError::io(path, e))?;
            f.read_to_end(&mut rest).map_err(|e| StoreError::io(path, e))?;
            let aside = keep_aside(path, valid_len, &rest)?;
            bytes_aside += rest.len() as u64;
            tracing::error!(
                path = %path.display(),
                kept_bytes = valid_len,
                unread_bytes = dropped,
                aside = %aside.display(),
                "write-ahead log segment unreadable before its end; the unread bytes are kept aside"
            );
        }
        if newest {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = valid_len,
                dropped_bytes = dropped,
                "truncating torn write-ahead log tail"
            );
            file.set_len(valid_len).map_err(|e| StoreError::io(path, e))?;
            file.sync_all().map_err(|e| StoreError::io(path, e))?;
        }
    }
    Ok(Replayed { records, skipped, bytes_aside })
}

fn open_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), StoreError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
    file.seek(SeekFrom::End(0)).map_err(|e| StoreError::io(&path, e))?;
    // The new name must survive a crash too, or a synced record could vanish with it.
    sync_dir(dir)?;
    Ok((file, path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

impl Wal {
    /// Starts writing segment `seq` of `dir` (appending if it exists).
    pub(crate) fn open(dir: &Path, seq: u64, policy: SyncPolicy) -> Result<Self, StoreError> {
        let (file, path) = open_segment(dir, seq)?;
        let good_len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let dir = dir.to_path_buf();
        let (tx, rx) = mpsc::channel();
        let writer = thread::Builder::new()
            .name("spindle-wal".into())
            .spawn(move || writer_loop(file, good_len, path, dir, seq, policy, rx))
            .map_err(|e| StoreError::io(Path::new("spindle-wal thread"), e))?;
        Ok(Wal { requests: Some(tx), writer: Some(writer) })
    }

    /// Writes one record and waits until it is durable per the sync policy.
    pub(crate) fn append(&self, payload: Vec<u8>) -> Result<(), StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Request::Append { payload, done })?;
        wait.recv().map_err(|_| StoreError::Closed)?.map_err(StoreError::Encode)
    }

    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Request::Sync { done })?;
        wait.recv().map_err(|_| StoreError::Closed)?.map_err(StoreError::Encode)
    }

    /// Syncs the current segment and starts the next; returns the new segment's number.
    /// Every record appended before the call is in a lower-numbered segment.
    pub(crate) fn rotate(&self) -> Result<u64, StoreError> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Request::Rotate { done })?;
        wait.recv().map_err(|_| StoreError::Closed)?.map_err(StoreError::Encode)
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests.as_ref().ok_or(StoreError::Closed)?.send(request).map_err(|_| StoreError::Closed)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what it has, sync and exit.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn writer_loop(
    file: File,
    mut good_len: u64,
    mut path: PathBuf,
    dir: PathBuf,
    mut seq: u64,
    policy: SyncPolicy,
    rx: mpsc::Receiver<Request>,
) {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut waiting: Vec<mpsc::SyncSender<Result<(), String>>> = Vec::new();
    let mut last_sync = Instant::now();
    let mut dirty = false;
    // `good_len` is where the segment's last record written without error ends; `pending`,
    // what the current group wrote after it.
    let mut pending = 0u64;
    loop {
        let first = match policy {
            SyncPolicy::Always => rx.recv().ok(),
            SyncPolicy::Interval(every) => {
                let left = every.saturating_sub(last_sync.elapsed());
                match rx.recv_timeout(left) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if dirty {
                            let _ = out.flush().and_then(|_| out.get_ref().sync_data());
                            dirty = false;
                        }
                        last_sync = Instant::now();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        let Some(first) = first else { break };
        let mut must_sync = false;
        let mut group_bytes = 0;
        let mut result: std::io::Result<()> = Ok(());
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append { payload, done } => {
                    if result.is_ok() {
                        result = write_record(&mut out, &payload);
                        match result {
                            Ok(()) => pending += (HEADER_LEN + payload.len()) as u64,
                            // Before a rotation could write the rest of the group out.
                            Err(_) => discard_failed_group(&mut out, &path, good_len),
                        }
                    }
                    group_bytes += payload.len() + HEADER_LEN;
                    waiting.push(done);
                }
                Request::Sync { done } => {
                    must_sync = true;
                    waiting.push(done);
                }
                Request::Rotate { done } => {
                    // Whatever this group wrote so far belongs to the old segment and is
                    // acknowledged with it below; the rotation itself is answered now.
                    let rotated = rotate_segment(&mut out, &dir, seq + 1);
                    match rotated {
                        Ok(new_path) => {
                            seq += 1;
                            path = new_path;
                            (good_len, pending) = (0, 0);
                            let _ = done.send(Ok(seq));
                        }
                        Err(e) => {
                            let _ = done.send(Err(format!("write-ahead log rotation failed: {e}")));
                        }
                    }
                }
            }
            if group_bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if result.is_ok() {
            result = out.flush();
        }
        dirty = true;
        let sync_now = must_sync
            || match policy {
                SyncPolicy::Always => true,
                SyncPolicy::Interval(every) => last_sync.elapsed() >= every,
            };
        if result.is_ok() && sync_now {
            result = out.get_ref().sync_data();
            dirty = false;
            last_sync = Instant::now();
        }
        if result.is_ok() {
            good_len += pending;
        } else {
            discard_failed_group(&mut out, &path, good_len);
        }
        pending = 0;
        let reply = result.map_err(|e| format!("write-ahead log {} failed: {e}", path.display()));
        if let Err(message) = &reply {
            tracing::error!(error = %message, "write-ahead log write failed");
        }
        for done in waiting.drain(..) {
            let _ = done.send(reply.clone());
        }
    }
    if let Err(e) = out.flush().and_then(|_| out.get_ref().sync_data()) {
        tracing::error!(path = %path.display(), error = %e, "final write-ahead log sync failed");
    }
}

/// After a write, flush or sync of a group failed (a full disk): drops what the group left in
/// the buffer and cuts the segment back to `good_len`, so that it holds exactly the records
/// acknowledged. Otherwise the buffer would write the refused records out once space
/// returns (stored although refused), and a header whose payload was never buffered
/// (`BufWriter` refuses a payload it cannot flush room for) would break the framing of every
/// record after it, which replay after a crash could then not read.
fn discard_failed_group(out: &mut std::io::BufWriter<File>, path: &Path, good_len: u64) {
    let discarded = out.get_ref().try_clone().and_then(|file| {
        let failed = std::mem::replace(out, std::io::BufWriter::with_capacity(1 << 20, file));
        // `into_parts` hands the buffered bytes back instead of writing them.
        drop(failed.into_parts());
        out.get_ref().set_len(good_len)
    });
    if let Err(e) = discarded {
        tracing::error!(path = %path.display(), error = %e, "cannot cut a failed write off the write-ahead log");
    }
}

/// Flushes and syncs the current segment, then swaps `out` to a fresh segment `seq`.
fn rotate_segment(out: &mut std::io::BufWriter<File>, dir: &Path, seq: u64) -> Result<PathBuf, StoreError> {
    out.flush().and_then(|_| out.get_ref().sync_data()).map_err(|e| StoreError::io(dir, e))?;
    let (file, path) = open_segment(dir, seq)?;
    *out = std::io::BufWriter::with_capacity(1 << 20, file);
    Ok(path)
}

fn write_record(out: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD_LEN)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "record too large"))?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.write_all(&header)?;
    out.write_all(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        replay(path, true, |p| {
            out.push(p.to_vec());
            true
        })
        .unwrap();
        out
    }

    fn three_records(dir: &Path, seq: u64) -> PathBuf {
        let wal = Wal::open(dir, seq, SyncPolicy::Always).unwrap();
        for r in [&b"first"[..], b"second", b"third"] {
            wal.append(r.to_vec()).unwrap();
        }
        segment_path(dir, seq)
    }

    #[test]
    fn a_damaged_record_inside_a_segment_costs_only_itself() {
        for newest in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = three_records(dir.path(), 1);
            let mut bytes = std::fs::read(&path).unwrap();
            // A bit of "second"'s payload flipped after it was synced.
            bytes[HEADER_LEN + 5 + HEADER_LEN + 2] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            let mut out = Vec::new();
            replay(&path, newest, |p| {
                out.push(p.to_vec());
                true
            })
            .unwrap();
            assert_eq!(out, vec![b"first".to_vec(), b"third".to_vec()], "newest={newest}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing truncated (newest={newest})");
            let offset = HEADER_LEN + 5;
            let record = &bytes[offset..offset + HEADER_LEN + 6];
            let aside = PathBuf::from(format!("{}.{offset}.unread", path.display()));
            assert_eq!(std::fs::read(&aside).unwrap(), record, "the damaged record is kept aside (newest={newest})");
            let replayed = replay(&path, newest, |_| true).unwrap();
            assert_eq!((replayed.records, replayed.skipped, replayed.bytes_aside), (2, 1, record.len() as u64));
        }
    }

    #[test]
    fn an_unreadable_old_segment_is_not_truncated_and_its_rest_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_records(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // "second"'s length field damaged: nothing after it can be framed any more.
        bytes[HEADER_LEN + 5 + 3] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut out = Vec::new();
        replay(&path, false, |p| {
            out.push(p.to_vec());
            true
        })
        .unwrap();
        assert_eq!(out, vec![b"first".to_vec()]);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "an older segment is never truncated");
        let aside = PathBuf::from(format!("{}.{}.unread", path.display(), HEADER_LEN + 5));
        assert_eq!(std::fs::read(&aside).unwrap(), &bytes[HEADER_LEN + 5..]);
        assert_eq!(segments(dir.path()).unwrap().len(), 1, "the kept bytes are not a segment");
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        {
            let wal = Wal::open(dir.path(), 1, SyncPolicy::Always).unwrap();
            wal.append(b"one".to_vec()).unwrap();
            wal.append(b"two".to_vec()).unwrap();
        }
        let good_len = std::fs::metadata(&path).unwrap().len();
        // A torn record: header promising 100 bytes, 3 present.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&100u32.to_le_bytes()).unwrap();
        f.write_all(&[0, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        assert_eq!(collect(&path), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        // Appends after recovery follow the valid data.
        {
            let wal = Wal::open(dir.path(), 1, SyncPolicy::Interval(Duration::from_millis(5))).unwrap();
            wal.append(b"three".to_vec()).unwrap();
        }
        assert_eq!(collect(&path).len(), 3);
    }

    #[test]
    fn corrupt_checksum_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 3);
        {
            let wal = Wal::open(dir.path(), 3, SyncPolicy::Always).unwrap();
            wal.append(b"first".to_vec()).unwrap();
            wal.append(b"second".to_vec()).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(collect(&path), vec![b"first".to_vec()]);
    }

    #[test]
    fn rotation_splits_records_between_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), 5, SyncPolicy::Always).unwrap();
        wal.append(b"old".to_vec()).unwrap();
        assert_eq!(wal.rotate().unwrap(), 6);
        wal.append(b"new".to_vec()).unwrap();
        drop(wal);
        let segs = segments(dir.path()).unwrap();
        assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(collect(&segs[0].1), vec![b"old".to_vec()]);
        assert_eq!(collect(&segs[1].1), vec![b"new".to_vec()]);
        remove_segments_before(dir.path(), 6).unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn sync_policy_parses() {
        assert_eq!("always".parse::<SyncPolicy>(), Ok(SyncPolicy::Always));
        assert_eq!("interval:250".parse::<SyncPolicy>(), Ok(SyncPolicy::Interval(Duration::from_millis(250))));
        assert!("sometimes".parse::<SyncPolicy>().is_err());
    }
}
