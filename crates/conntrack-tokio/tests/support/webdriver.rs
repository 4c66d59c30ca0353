//! A minimal W3C WebDriver client for tests: starts `chromedriver` on a loopback port of its
//! choosing, opens a headless Chromium session with a given window size, navigates and runs
//! scripts. Plain HTTP/1.1 with JSON bodies over hyper; the driver (and the browser it
//! started) is killed when the [`ChromeDriver`] is dropped.
//!
//! chromedriver: `$CHROMEDRIVER` if set, else `/usr/bin/chromedriver`, else `chromedriver` on
//! `PATH`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// How long chromedriver may take to start, and a command to answer.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The chromedriver to run, if there is one.
pub(crate) fn find_chromedriver() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("CHROMEDRIVER").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    let default = Path::new("/usr/bin/chromedriver");
    if default.is_file() {
        return Some(default.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

/// A running chromedriver, in its own process group (with the browsers it starts).
pub(crate) struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    /// Starts `driver` on a port it picks (`--port=0`) and waits, bounded, for the line that
    /// says which. A driver that exits before saying so (it happened once in a loaded run) is
    /// started again, up to three times; the error then carries what each attempt printed and
    /// how it ended.
    pub(crate) fn start(driver: &Path) -> Result<Self, String> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_once(driver) {
                Ok(d) => return Ok(d),
                Err(e) => failures.push(e),
            }
        }
        Err(format!(
            "chromedriver did not start: {}",
            failures.join("; then ")
        ))
    }

    fn start_once(driver: &Path) -> Result<Self, String> {
        use std::os::unix::process::CommandExt as _;

        let mut child = Command::new(driver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", driver.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // The driver's last lines, for the error if it does not start.
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let keep = |said: &Arc<Mutex<Vec<String>>>, line: &str| {
            let mut said = said.lock().unwrap_or_else(PoisonError::into_inner);
            if said.len() < 20 {
                said.push(line.to_owned());
            }
        };
        let (tx, rx) = mpsc::channel();
        // Reads the port, then keeps draining the pipes so the driver never blocks on them.
        std::thread::spawn({
            let said = Arc::clone(&said);
            move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let port = line
                        .split("started successfully on port ")
                        .nth(1)
                        .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok());
                    match port {
                        Some(port) => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(port);
                            }
                        }
                        None if tx.is_some() => keep(&said, &line),
                        None => {}
                    }
                }
            }
        });
        std::thread::spawn({
            let said = Arc::clone(&said);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    keep(&said, &line);
                }
            }
        });
        let mut driver = ChromeDriver { child, port: 0 };
        match rx.recv_timeout(TIMEOUT) {
            Ok(port) => {
                driver.port = port;
                Ok(driver)
            }
            Err(e) => {
                let how = match e {
                    mpsc::RecvTimeoutError::Timeout => format!("nothing within {TIMEOUT:?}"),
                    mpsc::RecvTimeoutError::Disconnected => "its output ended".to_owned(),
                };
                // Bounded: the driver's exit status if it has exited within a moment.
                let mut status = None;
                for _ in 0..20 {
                    status = driver.child.try_wait().ok().flatten();
                    if status.is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let said = said
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .join(" | ");
                Err(format!(
                    "chromedriver did not say which port it listens on ({how}; exit status \
                     {status:?}; it said: {said:?})"
                ))
            }
        }
    }

    /// Opens a session on headless `chromium` with a `width`×`height` window.
    pub(crate) async fn session(
        &self,
        chromium: &Path,
        width: u32,
        height: u32,
    ) -> Result<Session, String> {
        self.session_with_prefs(chromium, width, height, json!({}))
            .await
    }

    /// [`session`](Self::session), with Chromium profile preferences (`prefs`), e.g.
    /// `{"profile.managed_default_content_settings.javascript": 2}` for scripts off.
    pub(crate) async fn session_with_prefs(
        &self,
        chromium: &Path,
        width: u32,
        height: u32,
        prefs: Value,
    ) -> Result<Session, String> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Straight to the loopback server, whatever proxy the environment names.
            "--no-proxy-server",
            &format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args, "prefs": prefs},
        }}});
        let value = call(self.port, "POST", "/session", &caps).await?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {value}"))?
            .to_owned();
        Ok(Session {
            port: self.port,
            id,
        })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session.
pub(crate) struct Session {
    port: u16,
    id: String,
}

impl Session {
    /// Loads `url` and waits until it has loaded.
    pub(crate) async fn navigate(&self, url: &str) -> Result<(), String> {
        let path = format!("/session/{}/url", self.id);
        call(self.port, "POST", &path, &json!({ "url": url }))
            .await
            .map(drop)
    }

    /// Sizes the window so that the page's viewport (`innerWidth` × `innerHeight`) is
    /// `width` × `height`: a headless window's size counts some browser frame around it.
    pub(crate) async fn set_viewport(&self, width: u32, height: u32) -> Result<(), String> {
        let inner = self.execute("return [innerWidth, innerHeight];").await?;
        let size = |i: usize| inner[i].as_f64().ok_or_else(|| format!("a size: {inner}"));
        let rect = call(
            self.port,
            "GET",
            &format!("/session/{}/window/rect", self.id),
            &json!({}),
        )
        .await?;
        let outer = |k: &str| rect[k].as_f64().ok_or_else(|| format!("a size: {rect}"));
        let body = json!({
            "width": outer("width")? + f64::from(width) - size(0)?,
            "height": outer("height")? + f64::from(height) - size(1)?,
        });
        call(
            self.port,
            "POST",
            &format!("/session/{}/window/rect", self.id),
            &body,
        )
        .await
        .map(drop)
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub(crate) async fn execute(&self, script: &str) -> Result<Value, String> {
        let path = format!("/session/{}/execute/sync", self.id);
        call(
            self.port,
            "POST",
            &path,
            &json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The page's current DOM, serialized.
    #[allow(dead_code)] // (not every test that includes this file reads the source)
    pub(crate) async fn source(&self) -> Result<String, String> {
        let path = format!("/session/{}/source", self.id);
        let v = call(self.port, "GET", &path, &json!({})).await?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no page source in {v}"))
    }

    /// Ends the session, closing its browser.
    pub(crate) async fn close(self) -> Result<(), String> {
        let path = format!("/session/{}", self.id);
        call(self.port, "DELETE", &path, &json!({})).await.map(drop)
    }
}

/// One WebDriver command: its `value`, or the error the driver gave.
async fn call(port: u16, method: &str, path: &str, body: &Value) -> Result<Value, String> {
    let what = format!("{method} {path}");
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect to chromedriver: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{port}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{status}: {v}"))
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{what}: no answer within {TIMEOUT:?}"))?
        .map_err(|e| format!("{what}: {e}"))
}
