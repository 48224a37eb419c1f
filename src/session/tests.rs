//! Reading session files: what is hashed, what is handed over, what is
//! recorded.

use super::*;
use std::io::Write;

fn digest_of(content: &[u8]) -> Digest {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    let mut f2 = f.try_clone().unwrap();
    std::io::Seek::rewind(&mut f2).unwrap();
    digest(f2, None).unwrap()
}

fn md5_hex(content: &[u8]) -> String {
    hex(&Md5::digest(content))
}

#[test]
fn hashes_only_complete_lines() {
    let d = digest_of(b"a\nbb\nfragment");
    assert_eq!(d.bytes, 5);
    assert_eq!(d.hash, md5_hex(b"a\nbb\n"));
    assert_eq!(digest_of(b"a\nbb\n"), d);
}

#[test]
fn fragment_only_and_empty_hash_as_empty() {
    assert_eq!(digest_of(b"no newline"), digest_of(b""));
    assert_eq!(digest_of(b"").bytes, 0);
}

#[test]
fn lines_across_chunk_boundaries() {
    let mut content = Vec::new();
    for i in 0..50_000 {
        content.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
    }
    content.extend_from_slice(b"tail without newline");
    let d = digest_of(&content);
    let complete = &content[..content.len() - 20];
    assert_eq!(d.bytes as usize, complete.len());
    assert_eq!(d.hash, md5_hex(complete));

    for limit in [Some(d.bytes), None] {
        let mut lines = Lines::new(file_with(&content), limit);
        let mut n = 0;
        while let Some(line) = lines.next_line().unwrap() {
            assert!(line.starts_with(format!("line {n} ").as_bytes()));
            n += 1;
        }
        assert_eq!(n, 50_000);
        assert_eq!(lines.finish(), d, "the same digest, read once");
    }
}

#[test]
fn stopping_early_hashes_exactly_the_lines_handed_out() {
    let mut content = Vec::new();
    for i in 0..20_000 {
        content.extend_from_slice(format!("{i} {}\n", "y".repeat(i % 50)).as_bytes());
    }
    for stop in [0, 1, 7, 5_000, 19_999] {
        let mut lines = Lines::new(file_with(&content), None);
        let mut seen = Vec::new();
        for _ in 0..stop {
            let line = lines.next_line().unwrap().unwrap();
            seen.extend_from_slice(line);
            seen.push(b'\n');
        }
        let d = lines.finish();
        assert_eq!(d.bytes as usize, seen.len(), "after {stop} lines");
        assert_eq!(d.hash, md5_hex(&seen), "after {stop} lines");
    }
}

fn file_with(content: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    std::io::Seek::rewind(&mut f).unwrap();
    f
}

#[test]
fn known_digest_bounds_the_read() {
    let d = digest_of(b"one\ntwo\n");
    let mut lines = Lines::new(file_with(b"one\ntwo\nthree\n"), Some(d.bytes));
    assert_eq!(lines.next_line().unwrap(), Some(&b"one"[..]));
    assert_eq!(lines.next_line().unwrap(), Some(&b"two"[..]));
    assert_eq!(lines.next_line().unwrap(), None);
}

#[test]
fn oversized_lines_are_skipped_but_hashed() {
    let mut content = b"small\n".to_vec();
    content.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
    content.extend_from_slice(b"\nafter\nfrag");
    let d = digest_of(&content);
    let mut lines = Lines::new(file_with(&content), None);
    assert_eq!(lines.next_line().unwrap(), Some(&b"small"[..]));
    assert_eq!(lines.next_line().unwrap(), Some(&b"after"[..]));
    assert_eq!(lines.next_line().unwrap(), None);
    assert_eq!(lines.oversized(), 1);
    assert_eq!(lines.finish(), d);
    assert_eq!(d.bytes as usize, content.len() - 4);
    assert_eq!(d.hash, md5_hex(&content[..content.len() - 4]));
}

#[test]
fn an_oversized_fragment_at_the_end_is_not_hashed() {
    let mut content = b"small\n".to_vec();
    content.extend(std::iter::repeat_n(b'x', MAX_LINE + CHUNK * 3));
    let d = digest_of(&content);
    assert_eq!(d.bytes, 6);
    assert_eq!(d.hash, md5_hex(b"small\n"));
}

/// A file as the scan would have found it.
fn scanned(content: &[u8]) -> (tempfile::TempDir, SessionFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    std::fs::write(&path, content).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let file = SessionFile {
        name: "u/s.jsonl".into(),
        path,
        stat: crate::scan::Stat::of(&meta),
        dev: meta.dev(),
    };
    (dir, file)
}

#[test]
fn a_session_records_what_it_handed_over_and_nothing_more() {
    let (_dir, file) = scanned(b"one\ntwo\nthree\nfrag");
    let path = file.path.clone();
    let whole = digest(open(&path, file.dev, file.stat.inode).unwrap(), None).unwrap();
    for known in [None, Some(&whole)] {
        // Stops after one line: the record is of that line only.
        let mut session = Session::new(&file, known);
        assert_eq!(
            session.lines().unwrap().next_line().unwrap(),
            Some(&b"one"[..])
        );
        let early = session.handed_over();
        assert!(!early.whole);
        assert_eq!(early.digest.hash, md5_hex(b"one\n"));
        assert_eq!(early.digest.bytes, 4);
        // Reads to the end: the whole complete-line prefix.
        let mut session = Session::new(&file, known);
        let lines = session.lines().unwrap();
        while lines.next_line().unwrap().is_some() {}
        assert_eq!(
            session.handed_over(),
            Handover {
                digest: whole.clone(),
                whole: true,
                prefixes: Vec::new(),
            }
        );
    }
    // Given the digest and reading nothing itself (an external command).
    let given = Session::new(&file, Some(&whole)).handed_over();
    assert_eq!(
        given,
        Handover {
            digest: whole.clone(),
            whole: true,
            prefixes: Vec::new(),
        }
    );
    let nothing = Session::new(&file, None).handed_over();
    assert_eq!((nothing.digest.bytes, nothing.whole), (0, false));
}

#[test]
fn probes_note_the_hash_of_each_prefix_that_ends_a_line() {
    let (_dir, file) = scanned(b"one\ntwo\nthree\nfrag");
    let mut session = Session::new(&file, None);
    // 4 and 8 end lines; 5 does not; 14 ends "three"; 18 is the fragment.
    session.probe(vec![8, 5, 4, 14, 18, 4]);
    let lines = session.lines().unwrap();
    while lines.next_line().unwrap().is_some() {}
    let prefixes = session.handed_over().prefixes;
    let want: Vec<Digest> = [&b"one\n"[..], b"one\ntwo\n", b"one\ntwo\nthree\n"]
        .iter()
        .map(|p| Digest {
            hash: md5_hex(p),
            bytes: p.len() as u64,
        })
        .collect();
    assert_eq!(prefixes, want);
}

#[test]
fn a_final_line_counted_without_its_newline_is_still_a_prefix_once_completed() {
    let before = b"{\"a\":1}\n{\"b\":2}";
    let settled = digest(file_with(before), Some(before.len() as u64)).unwrap();
    let (_dir, file) = scanned(b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    let mut session = Session::new(&file, None);
    session.probe(vec![settled.bytes, 7]);
    let lines = session.lines().unwrap();
    while lines.next_line().unwrap().is_some() {}
    let prefixes = session.handed_over().prefixes;
    assert_eq!(
        prefixes,
        [
            Digest {
                hash: md5_hex(b"{\"a\":1}"),
                bytes: 7
            },
            settled
        ]
    );
}

#[test]
fn hex_is_lowercase_pairs() {
    assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
}

#[test]
fn a_settled_final_json_value_is_a_line_and_anything_else_is_not() {
    let read = |content: &[u8], settled: bool| {
        let mut lines = Lines::new(file_with(content), None);
        lines.final_line(settled.then_some(content.len() as u64));
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            got.push(String::from_utf8_lossy(line).into_owned());
        }
        (got, lines.finish())
    };
    let content = b"{\"a\":1}\n{\"b\":2}";
    let (got, d) = read(content, true);
    assert_eq!(got, ["{\"a\":1}", "{\"b\":2}"]);
    assert_eq!(
        (d.bytes, d.hash.clone()),
        (content.len() as u64, md5_hex(content))
    );
    assert_eq!(
        d,
        digest(file_with(content), Some(content.len() as u64)).unwrap(),
        "the same rule when hashing first"
    );
    let (got, d) = read(content, false);
    assert_eq!(got, ["{\"a\":1}"]);
    assert_eq!(d.bytes, 8);
    let (got, d) = read(b"{\"a\":1}\n{\"b\":", true);
    assert_eq!((got.len(), d.bytes), (1, 8), "half a value is not a line");
    // Grown since it was judged settled: what was appended is not taken.
    let mut lines = Lines::new(file_with(content), None);
    lines.final_line(Some(10));
    while lines.next_line().unwrap().is_some() {}
    assert_eq!(lines.finish().bytes, 8);
}

#[test]
fn a_large_file_hashed_on_a_thread_gives_the_same_digests() {
    let mut content = Vec::new();
    let mut ends = Vec::new();
    for i in 0..60_000 {
        content.extend_from_slice(
            format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "y".repeat(i % 97)).as_bytes(),
        );
        ends.push(content.len() as u64);
    }
    content.extend_from_slice(b"{\"fragment\":");
    assert!(content.len() as u64 > HASH_ON_A_THREAD_OVER * 3);
    let (_dir, file) = scanned(&content);
    let mut session = Session::new(&file, None);
    let (early, late) = (ends[10], ends[50_000]);
    session.probe(vec![late, early]);
    let lines = session.lines().unwrap();
    let mut n = 0;
    while lines.next_line().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 60_000);
    let handover = session.handed_over();
    let whole = ends[59_999] as usize;
    assert_eq!(handover.digest.hash, md5_hex(&content[..whole]));
    assert_eq!(
        handover.prefixes,
        [early, late]
            .iter()
            .map(|&b| Digest {
                hash: md5_hex(&content[..b as usize]),
                bytes: b
            })
            .collect::<Vec<_>>()
    );
    let first = File::open(&file.path).unwrap();
    assert_eq!(digest(first, None).unwrap(), handover.digest);
}
