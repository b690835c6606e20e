//! The web console (`/console`) in a real headless Chromium, driven through
//! chromedriver (WebDriver) as an operator would use it: sign in, see the source,
//! create, pause and resume a subscription, find a delivery that failed against a real
//! receiver answering 500, replay it from the console and see it arrive. Throughout,
//! the browser logs no error and loads nothing from outside the relay's origin.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them).
//! Without them the test says so loudly and skips, unless
//! `CONSOLE_TEST_BROWSER=required` (set by scripts/test.sh once they are
//! installed), where a missing browser fails it. Screenshots of every page land in
//! `target/console-screenshots/`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_replays_a_failed_delivery_from_the_console() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.dispatch.max_attempts = 2;
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::scripted(Arc::new(|_, _| Reply::status(500))).await;
    let base = format!("http://{}", relay.api_addr);
    let b = &browser.client;

    // Signed out, the console shows a sign-in form and no data.
    b.goto(&format!("{base}/console"))
        .await
        .expect("open /console");
    let token_input = b
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .expect("a token field");
    assert!(
        !body_text(b).await.contains("shop"),
        "no data before sign-in"
    );
    browser.screenshot("0-sign-in").await;

    // A wrong token is refused, and its 401 is the only error the browser logs.
    token_input.send_keys("not-the-token").await.expect("type");
    click(b, "#sign-in-form button").await;
    wait_text(b, "#sign-in-error", "refused").await;
    let errors = browser.errors().await;
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "only the refused token's 401 is logged: {errors:?}"
    );
    assert_eq!(
        b.execute("return sessionStorage.length", vec![])
            .await
            .expect("js"),
        json!(0),
        "a refused token is not kept"
    );

    // Signed in: the sources page shows the source, running.
    let input = b.find(Locator::Css("#token")).await.expect("token field");
    input.clear().await.expect("clear");
    input.send_keys(TOKEN).await.expect("type");
    click(b, "#sign-in-form button").await;
    wait_for(b, "[data-source=\"shop\"]").await;
    wait_text(b, "#view", "running").await;
    assert!(
        !b.current_url().await.expect("url").as_str().contains(TOKEN),
        "the token is never in the address"
    );
    browser.screenshot("1-sources").await;

    // Create a subscription from the form; its secret is shown once.
    click_link(b, "Subscriptions").await;
    click_link(b, "New subscription").await;
    fill(b, "#sub-url", &rx.url).await;
    fill(b, "#sub-description", "crm-sync").await;
    fill(b, "#sub-event-types", "orders.*").await;
    browser.screenshot("2-new-subscription").await;
    click(b, "form.panel button[type=submit]").await;
    let secret = wait_for(b, "[data-secret]")
        .await
        .text()
        .await
        .expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (_, subs) = api.call(Method::GET, "/v1/subscriptions", None).await;
    let sub = subs["data"][0].clone();
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    assert_eq!(sub["url"], rx.url.as_str(), "{sub}");
    assert_eq!(sub["description"], "crm-sync");
    assert_eq!(sub["event_types"], json!(["orders.*"]));
    browser.screenshot("3-subscription").await;

    // Pause and resume it from its page.
    click(b, "[data-action=pause]").await;
    wait_for(b, "[data-action=resume]").await;
    assert_eq!(subscription(&api, &sub_id).await["enabled"], false);
    click(b, "[data-action=resume]").await;
    wait_for(b, "[data-action=pause]").await;
    assert_eq!(subscription(&api, &sub_id).await["enabled"], true);

    // A test event: the receiver's 500 is shown as the attempt's outcome.
    click(b, "[data-action=test]").await;
    let result = wait_text(b, "[data-test-result]", "500").await;
    assert!(result.contains("not delivered"), "{result}");

    // A rotated secret is shown once; the old one keeps signing meanwhile.
    click(b, "[data-action=rotate-secret]").await;
    accept_confirmation(b).await;
    let rotated = wait_text(b, "[data-secret]", "whsec_").await;
    assert_ne!(rotated, secret, "a new secret");

    // Edit: a CEL filter, saved through PATCH.
    click_link(b, "Edit").await;
    fill(b, "#sub-filter", "op == \"insert\"").await;
    click(b, "form.panel button[type=submit]").await;
    wait_for(b, "[data-action=pause]").await;
    assert_eq!(
        subscription(&api, &sub_id).await["filter"],
        "op == \"insert\""
    );

    // The list finds it by a piece of its description.
    click_link(b, "Subscriptions").await;
    fill(b, "#subscription-search", "CRM").await;
    click(b, "form[role=search] button").await;
    wait_for(b, &format!("[data-subscription=\"{sub_id}\"]")).await;
    browser.screenshot("4-subscriptions").await;

    // A change whose delivery fails against the receiver answering 500.
    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'new')")
        .await
        .expect("insert");
    let failed = eventually("the delivery to end failed", WAIT, || async {
        let (_, page) = api
            .call(
                Method::GET,
                &format!("/v1/deliveries?subscription_id={sub_id}&status=failed"),
                None,
            )
            .await;
        page["data"].get(0).cloned()
    })
    .await;
    let delivery_id = failed["id"].as_i64().expect("delivery id");
    let event_id = failed["event_id"].as_str().expect("event id").to_owned();

    // Found through the console: Deliveries, the Failed filter, the delivery itself.
    click_link(b, "Deliveries").await;
    click(b, "[data-status=failed]").await;
    let link = wait_for(b, &format!("[data-delivery=\"{delivery_id}\"]")).await;
    browser.screenshot("5-failed-deliveries").await;
    link.click().await.expect("open the delivery");
    wait_text(b, "#view", "Attempts").await;
    let page = wait_text(b, "#view", &event_id).await;
    assert!(page.contains("500"), "the attempts show the 500: {page}");
    let body = wait_for(b, "[data-event-body]")
        .await
        .text()
        .await
        .expect("event body");
    assert!(
        body.contains(&event_id) && body.contains("orders.insert"),
        "{body}"
    );
    browser.screenshot("6-failed-delivery").await;

    // The receiver recovers; Replay from the console delivers the same event.
    rx.set_script(Arc::new(|_, _| Reply::ok()));
    click(b, "[data-action=replay]").await;
    let got = rx.wait_delivered(1, WAIT).await;
    assert_eq!(got[0].id, event_id, "the replay keeps the event id");
    assert!(
        verify_signature(&secret, &got[0]),
        "signed with the secret shown"
    );
    wait_for(b, "[data-delivery-status=succeeded]").await;
    browser.screenshot("7-replayed").await;

    // The event's page shows its body and where it went.
    click_link(b, "Events").await;
    fill(b, "#event-id", &event_id).await;
    click(b, "form[role=search] button").await;
    wait_text(b, "#view", "Where it went").await;
    let page = wait_text(b, "#view", "crm-sync").await;
    assert!(page.contains("succeeded"), "{page}");
    browser.screenshot("8-event").await;

    // At a phone's width the page does not scroll sideways (tables scroll in place).
    b.set_window_size(390, 844).await.expect("resize");
    click_link(b, "Subscriptions").await;
    wait_for(b, &format!("[data-subscription=\"{sub_id}\"]")).await;
    let overflow = b
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .expect("js");
    assert!(
        overflow.as_i64().unwrap_or(i64::MAX) <= 0,
        "sideways scroll at 390 px: {overflow}"
    );
    browser.screenshot("9-subscriptions-phone").await;

    // Dark where the system is dark.
    browser
        .devtools(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await;
    b.goto(&format!("{base}/console#/deliveries/{delivery_id}"))
        .await
        .expect("open the delivery");
    wait_for(b, "[data-delivery-status=succeeded]").await;
    let background = b
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(background, json!("rgb(20, 23, 28)"), "the dark palette");
    browser.screenshot("10-delivery-phone-dark").await;

    // Delete, after a confirmation.
    b.set_window_size(1280, 900).await.expect("resize");
    b.goto(&format!("{base}/console#/subscriptions/{sub_id}"))
        .await
        .expect("open the subscription");
    click(b, "[data-action=delete]").await;
    accept_confirmation(b).await;
    wait_text(b, "#view", "No subscriptions yet").await;
    let (status, _) = api
        .call(Method::GET, &format!("/v1/subscriptions/{sub_id}"), None)
        .await;
    assert_eq!(status, 404, "deleted");

    // Nothing left the origin, and the browser logged no error.
    let loaded = b
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .expect("js");
    let loaded: Vec<String> = serde_json::from_value(loaded).expect("names");
    assert!(
        loaded.iter().any(|u| u.contains("/v1/deliveries")),
        "resource timing sees the API calls: {loaded:?}"
    );
    let elsewhere: Vec<&String> = loaded
        .iter()
        .filter(|u| !u.starts_with(&format!("{base}/")))
        .collect();
    assert!(elsewhere.is_empty(), "loaded from elsewhere: {elsewhere:?}");
    let errors = browser.errors().await;
    assert!(errors.is_empty(), "browser errors: {errors:?}");

    drop(browser);
    relay.shutdown().await;
}

/// The console's files need no token and carry a strict CSP; the API behind them
/// still does. Plain HTTP, no browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_are_served_with_a_strict_policy() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let base = format!("http://{}", relay.api_addr);
    let http = reqwest::Client::new();
    for (path, media_type) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/js/main.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let res = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(res.status(), 200, "{path}");
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(media_type), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    let missing = http
        .get(format!("{base}/console/js/nope.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let api = http
        .get(format!("{base}/v1/sources"))
        .send()
        .await
        .expect("get");
    assert_eq!(api.status(), 401, "the API still wants its token");
    relay.shutdown().await;
}

async fn subscription(api: &Api, id: &str) -> Value {
    let (status, body) = api
        .call(Method::GET, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn body_text(b: &Client) -> String {
    b.find(Locator::Css("body"))
        .await
        .expect("body")
        .text()
        .await
        .expect("text")
}

async fn wait_for(b: &Client, css: &str) -> Element {
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
}

/// Waits until the element's text contains `needle`; answers that text.
async fn wait_text(b: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = match b.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {needle:?} in {css}; it shows: {text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(b: &Client, css: &str) {
    wait_for(b, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn click_link(b: &Client, text: &str) {
    b.wait()
        .at_most(WAIT)
        .for_element(Locator::LinkText(text))
        .await
        .unwrap_or_else(|e| panic!("link {text:?}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {text:?}: {e}"));
}

/// Accepts the `confirm()` dialog the last click opened.
async fn accept_confirmation(b: &Client) {
    let deadline = Instant::now() + WAIT;
    while let Err(e) = b.accept_alert().await {
        assert!(Instant::now() < deadline, "no confirmation dialog: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(b: &Client, css: &str, text: &str) {
    let el = wait_for(b, css).await;
    el.clear().await.expect("clear");
    el.send_keys(text).await.expect("type");
}

/// chromedriver on a free port and one headless Chromium session.
struct Browser {
    client: Client,
    driver: Child,
    driver_port: u16,
    driver_url: String,
    session: String,
    profile: PathBuf,
    shots: PathBuf,
}

impl Browser {
    /// `None` (after saying so loudly) where chromium or chromedriver is missing and
    /// the browser is not required.
    async fn start() -> Option<Self> {
        let required = std::env::var("CONSOLE_TEST_BROWSER").as_deref() == Ok("required");
        let (Some(chromium), Some(chromedriver)) = (
            on_path(&["chromium", "chromium-browser", "google-chrome"]),
            on_path(&["chromedriver"]),
        ) else {
            let why = "chromium and chromedriver are not installed \
                       (apt-get install chromium chromium-driver; scripts/test.sh does it)";
            assert!(!required, "CONSOLE_TEST_BROWSER=required but {why}");
            eprintln!("\n!!!!!!!!!!\nSKIPPED: the console's browser test: {why}\n!!!!!!!!!!\n");
            return None;
        };
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("chromedriver to answer", WAIT, || async {
            let res = http.get(format!("{driver_url}/status")).send().await.ok()?;
            let status: Value = res.json().await.ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile =
            std::env::temp_dir().join(format!("hookrelay-console-{}", uuid::Uuid::new_v4()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}"));
        let shots = target_dir().join("console-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot folder");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Some(Self {
            client,
            driver,
            driver_port: port,
            driver_url,
            session,
            profile,
            shots,
        })
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save screenshot");
    }

    /// Runs a DevTools protocol command through chromedriver.
    async fn devtools(&self, cmd: &str, params: Value) {
        let session = &self.session;
        let res = reqwest::Client::new()
            .post(format!(
                "{}/session/{session}/goog/cdp/execute",
                self.driver_url
            ))
            .json(&json!({"cmd": cmd, "params": params}))
            .send()
            .await
            .expect("devtools command");
        assert!(res.status().is_success(), "{cmd}: {}", res.status());
    }

    /// The browser's log entries at level SEVERE since the last call (console errors,
    /// failed loads, CSP violations), read through chromedriver's log endpoint.
    async fn errors(&self) -> Vec<String> {
        let session = &self.session;
        let res = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("browser log");
        let log: Value = res.json().await.expect("log JSON");
        log["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no browser log: {log}"))
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    /// After a failed assertion too: the session ends (Chromium quits), then
    /// chromedriver, the one process this test started, is stopped by its id.
    fn drop(&mut self) {
        end_session(self.driver_port, &self.session);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `DELETE /session/{id}` to chromedriver, synchronously (from `drop`), bounded in time.
/// The client's own shutdown is not used: it does not return once Chromium has quit.
fn end_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = conn.set_read_timeout(Some(WAIT));
    let _ = conn.set_write_timeout(Some(WAIT));
    let _ = write!(
        conn,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    // The answer's first bytes come once Chromium has quit; the rest does not matter.
    let _ = conn.read(&mut [0; 512]);
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `target/` of this build: the test binary runs from `target/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}
