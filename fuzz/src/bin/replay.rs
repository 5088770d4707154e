//! The fuzz targets on stable Rust, without libFuzzer: replays the seed corpus (and any corpus
//! cargo-fuzz left in `corpus/`), then feeds deterministic mutations of it (bit flips,
//! interesting bytes, insertions, deletions, duplications, splices) for a bounded time or
//! number of inputs. Not coverage-guided, but it runs anywhere and finds the shallow crashes;
//! a panic saves the input under `artifacts/TARGET/` and exits non-zero.
//!
//! ```sh
//! cargo run --release --manifest-path fuzz/Cargo.toml --no-default-features --features replay --bin replay -- all --seconds 30
//! cargo run --release --manifest-path fuzz/Cargo.toml --no-default-features --features replay --bin replay -- cert --iterations 100000 --seed 7
//! cargo run --release --manifest-path fuzz/Cargo.toml --no-default-features --features replay --bin replay -- frame artifacts/frame/crash-1234
//! ```

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cemwatch_fuzz::{Target, TARGETS};

/// splitmix64: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, 0x30, 0x82, b'"', b'[', b'=', b'\n', b':',
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                input.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let copy = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(256));
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            7 if len >= 2 => {
                // A length or size field: overwrite two bytes with a big-endian number.
                let i = rng.below(len - 1);
                let v = [0u16, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0xffff][rng.below(8)];
                input[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            _ => {
                let i = rng.below(len + 1);
                input.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
        if input.len() > 256 * 1024 {
            input.truncate(256 * 1024);
        }
    }
}

fn read_dir_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
}

thread_local! {
    static CURRENT: RefCell<(String, Vec<u8>)> = const { RefCell::new((String::new(), Vec::new())) };
}

fn save_crash(root: &Path) {
    CURRENT.with(|c| {
        let (target, input) = &*c.borrow();
        let dir = root.join("artifacts").join(target);
        let _ = std::fs::create_dir_all(&dir);
        let hash = input
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        let path = dir.join(format!("crash-{hash:016x}"));
        let _ = std::fs::write(&path, input);
        eprintln!(
            "\ncrash in target {target} on a {} byte input, saved to {}\nreplay it with: cargo run --release --manifest-path fuzz/Cargo.toml --no-default-features --features replay --bin replay -- {target} {}",
            input.len(),
            path.display(),
            path.display()
        );
    });
}

struct Options {
    targets: Vec<(&'static str, Target)>,
    files: Vec<PathBuf>,
    seconds: f64,
    iterations: u64,
    seed: u64,
}

fn usage() -> String {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    format!(
        "usage: replay (all|{}) [FILE...] [--seconds N] [--iterations N] [--seed N]",
        names.join("|")
    )
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or_else(usage)?;
    let targets: Vec<(&'static str, Target)> = if which == "all" {
        TARGETS.to_vec()
    } else {
        TARGETS
            .iter()
            .filter(|(n, _)| *n == which)
            .copied()
            .collect()
    };
    if targets.is_empty() {
        return Err(format!("unknown target {which:?}\n{}", usage()));
    }
    let mut o = Options {
        targets,
        files: Vec::new(),
        seconds: 20.0,
        iterations: u64::MAX,
        seed: 0x5eed,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--seconds" => {
                o.seconds = value("--seconds")?
                    .parse()
                    .map_err(|_| "--seconds: a number".to_string())?
            }
            "--iterations" => {
                o.iterations = value("--iterations")?
                    .parse()
                    .map_err(|_| "--iterations: a number".to_string())?
            }
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|_| "--seed: a number".to_string())?
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}\n{}", usage())),
            _ => o.files.push(PathBuf::from(arg)),
        }
    }
    Ok(o)
}

fn run_one(name: &str, f: Target, input: &[u8]) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        c.0.clear();
        c.0.push_str(name);
        c.1.clear();
        c.1.extend_from_slice(input);
    });
    f(input);
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let default_hook = std::panic::take_hook();
    let hook_root = root.clone();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        save_crash(&hook_root);
    }));

    if !options.files.is_empty() {
        for (name, f) in &options.targets {
            for file in &options.files {
                let bytes = match std::fs::read(file) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        return ExitCode::from(2);
                    }
                };
                run_one(name, *f, &bytes);
                println!("{name}: {} ok", file.display());
            }
        }
        return ExitCode::SUCCESS;
    }

    let per_target =
        Duration::from_secs_f64(options.seconds.max(0.0) / options.targets.len() as f64);
    for (name, f) in &options.targets {
        let mut corpus = Vec::new();
        read_dir_files(&root.join("seeds").join(name), &mut corpus);
        read_dir_files(&root.join("corpus").join(name), &mut corpus);
        if corpus.is_empty() {
            eprintln!("{name}: no seeds in fuzz/seeds/{name}: run `cargo run -p cemwatch-tests --example fuzz-seeds`");
            return ExitCode::from(2);
        }
        let started = Instant::now();
        for (_, bytes) in &corpus {
            run_one(name, *f, bytes);
        }
        let inputs: Vec<Vec<u8>> = corpus.into_iter().map(|(_, b)| b).collect();
        let mut rng = Rng(options.seed
            ^ name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b)));
        let mut runs = 0u64;
        let mut input = Vec::new();
        while runs < options.iterations && started.elapsed() < per_target {
            input.clear();
            if rng.below(16) != 0 {
                input.extend_from_slice(&inputs[rng.below(inputs.len())]);
            }
            mutate(&mut rng, &mut input, &inputs);
            run_one(name, *f, &input);
            runs += 1;
        }
        println!(
            "fuzz {name}: {} seed inputs and {runs} mutated inputs in {:.1} s, no crash",
            inputs.len(),
            started.elapsed().as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}
