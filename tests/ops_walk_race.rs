//! Export against a student who swaps entries of their folder for symlinks while the export reads it: nothing from
//! outside the folder may ever enter the archive, and the swaps must be seen to land inside the walk.

use std::io::Read;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use workspaced::ops::archive::export_to_writer;

const MARKER: &str = "TOPSECRET-4b1d";
const CHANGED: &str = "(changed during the walk, not followed)";

/// Keeps swapping until told to stop; counts its rounds.
fn swapper(stop: &AtomicBool, rounds: &AtomicU64, mut round: impl FnMut()) {
    while !stop.load(Ordering::Relaxed) {
        round();
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn an_export_racing_symlink_swaps_never_archives_anything_from_outside_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let alice = base.join("alice");
    let secret_key = tmp.path().join("secret.key");
    std::fs::create_dir_all(alice.join("d")).unwrap();
    std::fs::create_dir_all(base.join("bob")).unwrap();
    std::fs::write(base.join("SECRET"), format!("{MARKER} sibling of the student folders")).unwrap();
    std::fs::write(base.join("bob/notes.txt"), format!("{MARKER} another student")).unwrap();
    std::fs::write(&secret_key, format!("{MARKER} signing key")).unwrap();
    for i in 0..200 {
        std::fs::write(alice.join(format!("d/n{i:03}")), "decoy").unwrap();
    }
    // Siblings listed after `d` and read before the walk descends into it: the window a directory swap aims at.
    for i in 0..300 {
        std::fs::write(alice.join(format!("e{i:03}")), vec![b'e'; 1024]).unwrap();
    }
    // Several files to swap, so each export offers the file swap several small windows instead of one.
    const FILES: usize = 16;
    for i in 0..FILES {
        std::fs::write(alice.join(format!("f{i:02}")), "mine, not a secret").unwrap();
    }

    std::os::unix::fs::symlink("..", alice.join("d.lnk")).unwrap();
    std::os::unix::fs::symlink(&secret_key, alice.join("f.lnk")).unwrap();

    let stop = AtomicBool::new(false);
    let (d_rounds, f_rounds) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut exports, mut d_changed, mut f_changed, mut f_seen_as_link) = (0u64, 0u64, 0u64, 0u64);
    std::thread::scope(|scope| {
        // `d` and the symlink `d.lnk -> ..` trade places atomically, so each name is a directory half of the time
        // and a link the other half, never missing.
        scope.spawn(|| swapper(&stop, &d_rounds, || exchange(&alice, "d", "d.lnk")));
        scope.spawn(|| {
            let mut i = 0;
            swapper(&stop, &f_rounds, || {
                let f = format!("f{i:02}");
                i = (i + 1) % FILES;
                exchange(&alice, &f, "f.lnk");
                exchange(&alice, &f, "f.lnk");
            })
        });

        let started = Instant::now();
        // Bounded either way; ends early once both swappers were seen to land inside the walk several times.
        while exports < 200 && started.elapsed() < Duration::from_secs(10) && !(d_changed >= 10 && f_seen_as_link >= 5)
        {
            let mut archive = Vec::new();
            let stats = export_to_writer(&alice, &mut archive, |_| {});
            let stats = match stats {
                Ok(s) => s,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    panic!("export {exports} failed: {e}");
                }
            };
            exports += 1;
            let changed = |prefix: &str| {
                stats.skipped.iter().filter(|s| s.starts_with(prefix) && s.ends_with(CHANGED)).count() as u64
            };
            d_changed += changed("d");
            f_changed += changed("f");

            let mut raw = Vec::new();
            GzDecoder::new(&archive[..]).read_to_end(&mut raw).unwrap();
            let leaked = String::from_utf8_lossy(&raw).contains(MARKER);
            let mut outside = Vec::new();
            let mut tar = tar::Archive::new(&raw[..]);
            for entry in tar.entries().unwrap() {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().into_owned();
                let name = path.to_string_lossy();
                if name.len() == 3 && name.starts_with('f') && entry.header().entry_type().is_symlink() {
                    f_seen_as_link += 1;
                }
                if !inside_the_folder(&path) {
                    outside.push(path.display().to_string());
                }
            }
            if leaked || !outside.is_empty() {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "export {exports} archived data from outside the folder (marker found: {leaked}; foreign \
                     paths: {:?})",
                    &outside[..outside.len().min(10)]
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "{exports} exports; d swapped {} times, f {} times; skipped as changed: d {d_changed}, f {f_changed}; f \
         archived as a link {f_seen_as_link} times",
        d_rounds.load(Ordering::Relaxed),
        f_rounds.load(Ordering::Relaxed)
    );
    // Without a swap landing between listing and opening, the assertions above proved nothing.
    assert!(d_changed >= 1, "no directory swap landed between listing and descending in {exports} exports");
    assert!(f_changed + f_seen_as_link >= 1, "no file swap was seen by the walk in {exports} exports");
}

/// Swaps two names in `dir` in one step (`renameat2(RENAME_EXCHANGE)`).
fn exchange(dir: &Path, a: &str, b: &str) {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, &dir.join(a), AT_FDCWD, &dir.join(b), RenameFlags::RENAME_EXCHANGE)
        .unwrap_or_else(|e| panic!("exchanging {a} and {b}: {e}"));
}

/// The names the test created inside the folder, at the places it created them.
fn inside_the_folder(path: &Path) -> bool {
    let parts: Vec<String> = path
        .components()
        .map(|c| match c {
            Component::Normal(n) => n.to_string_lossy().into_owned(),
            _ => "/".to_owned(),
        })
        .collect();
    let top = |n: &str| {
        ["d", "d.lnk", "f.lnk"].contains(&n)
            || (n.len() == 4 && n.starts_with('e'))
            || (n.len() == 3 && n.starts_with('f'))
    };
    match parts.as_slice() {
        [name] => top(name),
        [dir, name] => (dir == "d" || dir == "d.lnk") && name.len() == 4 && name.starts_with('n'),
        _ => false,
    }
}
