//! The status pages in a real browser: Debian's `chromium`, headless, against a demo that the
//! page's own Demo form switches through every scenario. In each one the DOM the browser built
//! holds the diagnosis, its remedy and the verdict counts the API gives; a screenshot at desktop
//! and at phone width is not blank (kept under `target/browser/`); the browser's network log shows
//! no request of the page leaving its origin (and the page is sent with `default-src 'self'`);
//! the page and everything it loads stay under a weight budget; `tidy` finds no error or warning;
//! and basic accessibility holds (language, one `h1` and no skipped heading level, a label for
//! every form control, each verdict written as a word, each picture named); with its script the
//! page refreshes itself in place.
//!
//! Without `chromium` or `tidy` the test says that it skips, unless `CEMWATCH_REQUIRE_BROWSER=1`
//! (`.ci/run` sets it), which makes their absence a failure. `CEMWATCH_UPDATE_SCREENSHOTS=1`
//! also copies the healthy and the thumbprint-mismatch screenshots to `docs/` for the README.
//! The demo's own output is tested too: the address first, the fleet once, then one line a change.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cemwatch_coordinator::cli::demo::{scenario_name, Demo, DemoOptions, Scenario};
use cemwatch_tests::process::eventually;
use serde_json::Value;

use crate::support::paths::repo;
use crate::support::tools::tool;
use crate::support::{try_get_json, SCENARIOS, WAIT};

/// Makes a missing `chromium` or `tidy` a failure instead of a skip (`.ci/run` sets it).
const REQUIRE_BROWSER: &[&str] = &["CEMWATCH_REQUIRE_BROWSER"];

/// The weight budget of the fleet page with everything it loads (HTML, stylesheet, script):
/// 64 KiB. A status page opened over a VPN into a DMZ should load at once; today it is about a
/// third of that.
const FLEET_BUDGET: usize = 64 * 1024;
/// The budget of a check's page for the demo's ten probes (it lists every probe): 96 KiB.
const CHECK_BUDGET: usize = 96 * 1024;

/// An HTTP answer.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request on loopback (`Connection: close`), the body read to its end.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], "")
}

/// A form posted as the page's own form is (same origin).
fn post_form(addr: SocketAddr, path: &str, form: &str) -> Reply {
    let origin = format!("http://{addr}");
    request(
        addr,
        "POST",
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", &origin),
        ],
        form,
    )
}

/// A start tag: its name and attributes (enough for HTML the pages and chromium write).
#[derive(Debug)]
struct Tag {
    name: String,
    attrs: BTreeMap<String, String>,
    /// Byte offset just after the tag.
    end: usize,
}

fn tags(html: &str) -> Vec<Tag> {
    let bytes = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(lt) = html[i..].find('<') {
        let start = i + lt + 1;
        i = start;
        if !bytes.get(start).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let mut j = start;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'-') {
            j += 1;
        }
        let name = html[start..j].to_ascii_lowercase();
        let mut attrs = BTreeMap::new();
        loop {
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= bytes.len() || bytes[j] == b'>' || bytes[j] == b'/' {
                break;
            }
            let k0 = j;
            while j < bytes.len() && !b"=> \t\n/".contains(&bytes[j]) {
                j += 1;
            }
            let key = html[k0..j].to_ascii_lowercase();
            let mut value = String::new();
            if bytes.get(j) == Some(&b'=') {
                j += 1;
                if bytes.get(j) == Some(&b'"') {
                    let v0 = j + 1;
                    let v1 = html[v0..].find('"').map(|x| v0 + x).unwrap_or(bytes.len());
                    value = html[v0..v1].to_string();
                    j = v1 + 1;
                } else {
                    let v0 = j;
                    while j < bytes.len() && !bytes[j].is_ascii_whitespace() && bytes[j] != b'>' {
                        j += 1;
                    }
                    value = html[v0..j].to_string();
                }
            }
            attrs.insert(key, value);
        }
        let end = html[j..]
            .find('>')
            .map(|x| j + x + 1)
            .unwrap_or(bytes.len());
        out.push(Tag { name, attrs, end });
        i = end;
    }
    out
}

/// The text right after a tag, up to the next tag.
fn text_after<'a>(html: &'a str, tag: &Tag) -> &'a str {
    let rest = &html[tag.end..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}

/// Basic accessibility of a page as the browser built it.
fn assert_accessible(what: &str, html: &str) {
    let tags = tags(html);
    let root = tags.iter().find(|t| t.name == "html").expect("html");
    assert_eq!(
        root.attrs.get("lang").map(String::as_str),
        Some("en"),
        "{what}: language"
    );
    let levels: Vec<u32> = tags
        .iter()
        .filter_map(|t| {
            let n = t.name.strip_prefix('h')?;
            (n.len() == 1).then(|| n.parse().ok()).flatten()
        })
        .collect();
    assert_eq!(levels.first(), Some(&1), "{what}: the first heading is h1");
    assert_eq!(
        levels.iter().filter(|l| **l == 1).count(),
        1,
        "{what}: one h1"
    );
    for pair in levels.windows(2) {
        assert!(
            pair[1] <= pair[0] + 1,
            "{what}: a heading level skipped: {levels:?}"
        );
    }
    let labelled: Vec<&str> = tags
        .iter()
        .filter(|t| t.name == "label")
        .filter_map(|t| t.attrs.get("for").map(String::as_str))
        .collect();
    let mut controls = 0;
    for t in &tags {
        let control = t.name == "select"
            || t.name == "textarea"
            || (t.name == "input" && t.attrs.get("type").map(String::as_str) != Some("hidden"));
        if control {
            controls += 1;
            let id = t.attrs.get("id").map(String::as_str).unwrap_or("");
            assert!(
                !id.is_empty() && labelled.contains(&id),
                "{what}: a form control without a label: {t:?}"
            );
        }
    }
    let mut badges = 0;
    for (i, t) in tags.iter().enumerate() {
        let class = t.attrs.get("class").map(String::as_str).unwrap_or("");
        if let Some(sev) = class.strip_prefix("badge ") {
            badges += 1;
            let word = tags
                .get(i + 1)
                .map(|next| text_after(html, next))
                .unwrap_or("");
            assert_eq!(
                word,
                sev.to_uppercase(),
                "{what}: a verdict is written as a word, not only a colour"
            );
        }
        if t.name == "svg" {
            assert_eq!(
                t.attrs.get("role").map(String::as_str),
                Some("img"),
                "{what}: {t:?}"
            );
            assert!(
                t.attrs.get("aria-label").is_some_and(|l| !l.is_empty()),
                "{what}: a picture without a name: {t:?}"
            );
        }
        if t.name == "img" {
            assert!(t.attrs.contains_key("alt"), "{what}: {t:?}");
        }
    }
    assert!(badges > 0, "{what}: no verdict badge at all");
    println!(
        "{what}: accessible ({} headings, {controls} labelled controls, {badges} verdict badges)",
        levels.len()
    );
}

/// `tidy -q -e` finds neither error nor warning.
fn assert_valid(tidy: &Path, what: &str, html: &str, dir: &Path) {
    let file = dir.join("page.html");
    std::fs::write(&file, html).expect("write");
    let out = Command::new(tidy)
        .args(["-q", "-e"])
        .arg(&file)
        .output()
        .expect("tidy");
    assert!(
        out.status.success(),
        "{what}: tidy says ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Headless chromium with its own profile and none of its own background traffic it can help.
struct Browser {
    exe: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn run(&self, args: &[String]) -> Output {
        let mut child = Command::new(&self.exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if child.try_wait().expect("wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "chromium {args:?} took more than 90 s:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The DOM after load (scripts run).
    fn dom(&self, url: &str) -> String {
        let out = self.run(&["--dump-dom".into(), url.into()]);
        assert!(
            out.status.success(),
            "chromium --dump-dom {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The DOM after `seconds` of the page's own (virtual) time: its script has refreshed it.
    fn dom_after(&self, url: &str, seconds: u32) -> String {
        let out = self.run(&[
            format!("--virtual-time-budget={}", seconds * 1000),
            "--dump-dom".into(),
            url.into(),
        ]);
        assert!(
            out.status.success(),
            "chromium --dump-dom {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A screenshot at `width` × `height`.
    fn screenshot(&self, url: &str, (width, height): (u32, u32), path: &Path) {
        let _ = std::fs::remove_file(path);
        let out = self.run(&[
            format!("--screenshot={}", path.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ]);
        assert!(
            out.status.success() && path.exists(),
            "chromium --screenshot {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every request made while loading `url`, from chromium's network log: (URL, initiator).
    /// Requests of the browser itself carry the initiator "not an origin".
    fn requests(&self, url: &str, log: &Path) -> Vec<(String, String)> {
        let out = self.run(&[
            format!("--log-net-log={}", log.display()),
            "--dump-dom".into(),
            url.into(),
        ]);
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let netlog: Value = serde_json::from_str(&std::fs::read_to_string(log).expect("net log"))
            .expect("the net log is JSON");
        let start = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
            .as_u64()
            .expect("the net log names its event types");
        netlog["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["type"].as_u64() == Some(start))
            .filter_map(|e| {
                let p = &e["params"];
                Some((
                    p["url"].as_str()?.to_string(),
                    p["initiator"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect()
    }
}

/// A screenshot is not blank: several colours, and more than a sliver off its background.
fn assert_not_blank(path: &Path, (width, height): (u32, u32)) {
    let bytes = std::fs::read(path).expect("screenshot");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(
        (info.width, info.height),
        (width, height),
        "{}",
        path.display()
    );
    let channels = info.color_type.samples();
    let mut colours: BTreeMap<&[u8], usize> = BTreeMap::new();
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        *colours.entry(px).or_insert(0) += 1;
    }
    let total = (info.width * info.height) as usize;
    let background = colours.values().max().copied().unwrap_or(total);
    let off = 1.0 - background as f64 / total as f64;
    assert!(
        colours.len() >= 16 && off > 0.02,
        "{} looks blank: {} colours, {:.1}% off the background",
        path.display(),
        colours.len(),
        off * 100.0
    );
}

/// The page and what it loads from this origin, in bytes.
fn weight(http: SocketAddr, path: &str) -> usize {
    let page = get(http, path);
    assert_eq!(page.status, 200, "{path}");
    let assets: usize = tags(&page.body)
        .iter()
        .filter_map(|t| {
            t.attrs
                .get("src")
                .or(t.attrs.get("href").filter(|_| t.name == "link"))
        })
        .map(|src| {
            let r = get(http, src);
            assert_eq!(r.status, 200, "{src}");
            r.body.len()
        })
        .sum();
    page.body.len() + assets
}

fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_scenario_in_a_real_browser() {
    let _machine = crate::support::shared();
    let test = "pages::every_demo_scenario_in_a_real_browser";
    let install = "apt-get install chromium tidy; CI runs it";
    let Some(chromium) = tool("chromium", test, REQUIRE_BROWSER, install) else {
        return;
    };
    let Some(tidy) = tool("tidy", test, REQUIRE_BROWSER, install) else {
        return;
    };
    let demo = Demo::start(&DemoOptions {
        scenario: Scenario::Healthy,
        probes: 8,
        interval: Duration::from_secs(60),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        duration: None,
    })
    .await
    .expect("demo");
    demo.first_round(10).await;
    let http = demo.coordinator.http_addr;
    let shots = repo().join("target").join("browser");
    std::fs::create_dir_all(&shots).expect("target/browser");
    tokio::task::spawn_blocking(move || {
        let browser = Browser {
            exe: chromium,
            profile: tempfile::tempdir().expect("profile"),
        };
        let scratch = tempfile::tempdir().expect("scratch");
        let origin = format!("http://{http}");
        for (scenario, expected, sites) in SCENARIOS {
            let name = scenario_name(scenario);
            let switched_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis() as i64;
            // Switched the way a newcomer does it: the Demo panel's form.
            let switched = post_form(http, "/demo/scenario", &format!("scenario={name}"));
            assert_eq!(switched.status, 303, "{name}: {}", switched.body);
            let check = eventually(&format!("{name}: {expected} from all ten probes, after the switch"), WAIT, || {
                let v = try_get_json(http, "/api/v1/checks/gateway")?;
                let probes = v["probes"].as_array()?;
                let fresh = probes
                    .iter()
                    .filter(|p| p["produced_at_ms"].as_i64().is_some_and(|t| t >= switched_at))
                    .count();
                (v["diagnosis"] == expected && fresh == 10).then_some(v)
            })
            .expect("diagnosis");

            let page = get(http, "/");
            assert_eq!(page.status, 200);
            let csp = page.headers.get("content-security-policy").cloned().unwrap_or_default();
            assert!(csp.starts_with("default-src 'self'"), "{name}: {csp}");
            for t in tags(&page.body) {
                for attr in ["href", "src", "action"] {
                    if let Some(v) = t.attrs.get(attr) {
                        assert!(v.starts_with('/') && !v.starts_with("//"), "{name}: {attr}={v}");
                    }
                }
            }
            let bytes = weight(http, "/");
            assert!(bytes <= FLEET_BUDGET, "{name}: the fleet page weighs {bytes} bytes, over {FLEET_BUDGET}");
            assert_valid(&tidy, &format!("{name}: /"), &page.body, scratch.path());

            let dom = browser.dom(&format!("{origin}/"));
            assert!(dom.contains(&format!("data-scenario=\"{name}\"")), "{name}: {dom}");
            assert!(dom.contains(&format!("data-diagnosis=\"{expected}\"")), "{name}: {dom}");
            let detail = &check["detail"];
            let summary = detail["summary"].as_str().unwrap_or("");
            assert!(dom.contains(&escaped(summary)), "{name}: the summary {summary:?}");
            let remedy = detail["remedy"].as_str().unwrap_or("");
            if expected != "healthy" {
                assert!(!remedy.is_empty(), "{name} has a remedy");
            }
            assert!(dom.contains(&escaped(remedy)), "{name}: the remedy {remedy:?}");
            for site in sites {
                assert!(summary.contains(site), "{name}: {summary}");
            }
            let v = &check["verdicts"];
            let counts = format!("data-verdicts=\"{} {} {}\"", v["ok"], v["warn"], v["fail"]);
            assert!(dom.contains(&counts), "{name}: {counts}");
            assert!(dom.contains("data-probes=\"10 0 0\""), "{name}: ten probes connected");
            assert_accessible(&format!("{name}: /"), &dom);
            // With JavaScript the page follows the fleet in place (every 5 s): twice in 11 s.
            let later = browser.dom_after(&format!("{origin}/"), 11);
            assert!(later.contains("data-refreshed=\"2\""), "{name}: refreshed in place: {later}");
            assert!(later.contains(&format!("data-diagnosis=\"{expected}\"")), "{name}: {later}");

            for (size, suffix) in [((1280, 900), "desktop"), ((390, 844), "phone")] {
                let path = shots.join(format!("{name}-{suffix}.png"));
                browser.screenshot(&format!("{origin}/"), size, &path);
                assert_not_blank(&path, size);
            }

            let requests = browser.requests(&format!("{origin}/"), &scratch.path().join("net.json"));
            let mine: Vec<&(String, String)> =
                requests.iter().filter(|(_, i)| i != "not an origin").collect();
            for (url, initiator) in &mine {
                assert!(
                    url.starts_with(&format!("{origin}/")),
                    "{name}: the page (initiator {initiator}) requested {url}"
                );
            }
            for asset in ["/assets/cemwatch.css", "/assets/cemwatch.js"] {
                assert!(
                    mine.iter().any(|(u, _)| u.ends_with(asset)),
                    "{name}: the page loaded {asset}: {requests:?}"
                );
            }
            println!("{name}: {expected} in the browser, {bytes} bytes, {} requests of the page, all to {origin}", mine.len());
        }

        // The other pages, once: valid, accessible, under budget; the round form's page too.
        let probe = get_probe(http);
        let round = post_form(http, "/api/v1/rounds", "check=gateway");
        assert_eq!(round.status, 303, "{}", round.body);
        let round = round.headers.get("location").cloned().expect("location");
        for path in ["/checks/gateway", "/probes", &format!("/probes/{probe}"), &round] {
            let page = get(http, path);
            assert_eq!(page.status, 200, "{path}");
            assert_valid(&tidy, path, &page.body, scratch.path());
            let dom = browser.dom(&format!("{origin}{path}"));
            assert!(dom.contains("<h1>"), "{path}: {dom}");
            if path == "/checks/gateway" {
                assert_accessible(path, &dom);
                let bytes = weight(http, path);
                assert!(bytes <= CHECK_BUDGET, "{path} weighs {bytes} bytes, over {CHECK_BUDGET}");
            }
        }
        let missing = get(http, "/checks/nope");
        assert_eq!(missing.status, 404);
        assert!(missing.body.contains("<a href=\"/\">Back to the fleet</a>"), "{}", missing.body);
        assert_valid(&tidy, "the 404 page", &missing.body, scratch.path());

        if std::env::var_os("CEMWATCH_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
            for name in ["healthy", "thumbprint-mismatch"] {
                let to = repo().join("docs").join(format!("page-{name}.png"));
                std::fs::copy(shots.join(format!("{name}-desktop.png")), &to).expect("copy");
                println!("updated {}", to.display());
            }
        }
        println!("screenshots in {}", shots.display());
    })
    .await
    .expect("the browser checks");
    demo.stop().await;
}

/// The first probe's name, from the API.
fn get_probe(http: SocketAddr) -> String {
    let probes = try_get_json(http, "/api/v1/probes").expect("probes");
    probes[0]["name"].as_str().expect("a probe").to_string()
}

/// `cemwatch demo` as a newcomer runs it: the page's address is the first line, the fleet is
/// printed once it has settled, and afterwards each change is one line (here a scenario switched
/// from the page), never the whole status again on a timer.
#[test]
fn the_demo_prints_the_address_first_then_one_line_per_change() {
    let _machine = crate::support::shared();
    let mut child = Command::new(crate::support::COORDINATOR)
        .args([
            "demo",
            "--probes",
            "4",
            "--interval",
            "60s",
            "--duration",
            "300s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cemwatch demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let until = |needle: &str, within: Duration, seen: &mut Vec<String>| -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {within:?}; the demo printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
    };
    let first = until("", WAIT, &mut seen);
    let addr: SocketAddr = first
        .strip_prefix("open http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the first line is the page's address: {first:?}"));
    // Settling waits for every probe's first report: on a loaded 2-core machine (the browser
    // test beside it) that has taken over a minute.
    until("changes from now on", Duration::from_secs(180), &mut seen);
    let statuses = seen
        .iter()
        .filter(|l| l.starts_with("cemwatch status"))
        .count();
    assert_eq!(
        statuses,
        1,
        "the fleet printed once it settled:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("gateway  ") && l.contains("healthy")),
        "{}",
        seen.join("\n")
    );
    let from = seen.len();

    let switched = post_form(addr, "/demo/scenario", "scenario=gateway-down");
    assert_eq!(switched.status, 303, "{}", switched.body);
    until("scenario healthy -> gateway-down", WAIT, &mut seen);
    until("gateway: healthy -> gateway_down", WAIT, &mut seen);
    // Ten seconds more: two of the old five-second reprints would have come by now.
    let quiet_until = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = rx.recv_timeout(quiet_until.saturating_duration_since(Instant::now())) {
        seen.push(line);
    }
    let after = &seen[from..];
    assert!(
        !after
            .iter()
            .any(|l| l.starts_with("cemwatch status") || l.starts_with("probes:")),
        "the status is not reprinted:\n{}",
        after.join("\n")
    );
    let changes: Vec<&String> = after.iter().filter(|l| !l.is_empty()).collect();
    assert!(
        changes
            .iter()
            .all(|l| l.len() > 10 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':'),
        "each change is one time-stamped line:\n{}",
        after.join("\n")
    );
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "the demo printed {} lines, {} after settling:\n{}",
        seen.len(),
        after.len(),
        after.join("\n")
    );
}
