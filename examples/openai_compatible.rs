//! Failover across three OpenAI-compatible providers with `reqwest`, streamed answers included.
//!
//! The example starts three mock providers on loopback (axum servers speaking
//! `POST /v1/chat/completions`, JSON or Server-Sent Events) and puts each behind its own
//! `reqwest::Client` and circuit breaker. The breakers judge streams with
//! [`EndOfStream`](tower_breaker::http::EndOfStream): a stream read to `data: [DONE]` is a
//! success (even though the caller drops the body there, as SDKs do), and a stream cut half-way
//! is a failure, although its response was a `200`. A
//! [`Failover`](tower_breaker::failover::Failover) sends each request to the first provider
//! whose circuit admits it.
//!
//! The caller builds every request once, against a placeholder base URL; each member points it
//! at its own provider (whose API root may carry a prefix, like `/openai/v1/`).
//!
//! The story: `provider-a` answers, then cuts two streams half-way, and its circuit opens;
//! `provider-b` answers the retry with `429` and `Retry-After: 1`, which opens its circuit for
//! that second; `provider-c` takes the traffic. Once `provider-a`'s circuit half-opens, its probe
//! streams to `[DONE]`, the circuit closes, and it serves again. At the end every breaker's
//! stats are printed and checked (the process exits non-zero if the story did not happen).
//! It takes about two seconds, with no keys and no network beyond loopback.
//!
//! Run with `cargo run --example openai_compatible --features reqwest`.

use std::error::Error;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use http::{header, HeaderValue, StatusCode};
use reqwest::{Method, Url};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_breaker::circuit_breaker::{CircuitBreakerLayer, Handle, State as CircuitState};
use tower_breaker::failover::Failover;
use tower_breaker::http::EndOfStream;
use tower_breaker::BoxError;

/// The base URL requests are built against. `.invalid` never resolves (RFC 2606), so a request
/// that escaped its member's rewrite would fail instead of leaving loopback.
const PLACEHOLDER: &str = "http://openai-compatible.invalid/";

/// Pause between two streamed events, so the answers visibly stream.
const TOKEN_DELAY: Duration = Duration::from_millis(20);

/// Attempts per request, as an SDK's `max_retries` + 1.
const MAX_ATTEMPTS: u32 = 5;

// ---------------------------------------------------------------------------------------------
// The mock providers
// ---------------------------------------------------------------------------------------------

/// What a mock provider does with its `n`-th request (counting from 1).
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// A chat completion: JSON, or an SSE stream ending in `data: [DONE]`.
    Answer,
    /// A stream that sends this many tokens, then drops the connection.
    CutAfter(usize),
    /// `429 Too Many Requests` with `Retry-After` (seconds).
    RateLimited(u64),
}

struct Mock {
    name: &'static str,
    script: fn(usize) -> Reply,
    hits: AtomicUsize,
}

struct Running {
    name: &'static str,
    base: Url,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

async fn start(
    name: &'static str,
    root: &'static str,
    script: fn(usize) -> Reply,
) -> io::Result<Running> {
    let mock = Arc::new(Mock {
        name,
        script,
        hits: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route(&format!("{root}/chat/completions"), post(chat_completions))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = Url::parse(&format!("http://{}{root}/", listener.local_addr()?))
        .map_err(io::Error::other)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        name,
        base,
        stop,
        task,
    })
}

async fn chat_completions(State(mock): State<Arc<Mock>>, Json(request): Json<Value>) -> Response {
    let n = mock.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let prompt = request["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("mock").to_owned();
    let text = format!("{} here. You said: {prompt}", mock.name);
    let streamed = request["stream"].as_bool().unwrap_or(false);
    match (mock.script)(n) {
        Reply::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(json!({"error": {
                "message": "Rate limit reached for requests",
                "type": "rate_limit_exceeded",
                "code": "rate_limit_exceeded",
            }})),
        )
            .into_response(),
        _ if !streamed => Json(json!({
            "id": format!("chatcmpl-{n}"),
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
        }))
        .into_response(),
        Reply::Answer => sse(n, &model, &text, None),
        Reply::CutAfter(tokens) => sse(n, &model, &text, Some(tokens)),
    }
}

/// An OpenAI-style chat completion stream, one token per event; cut after `cut` tokens if set.
fn sse(n: usize, model: &str, text: &str, cut: Option<usize>) -> Response {
    let chunk = |delta: Value, finish_reason: Value| {
        let chunk = json!({
            "id": format!("chatcmpl-{n}"),
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        Ok(format!("data: {chunk}\n\n"))
    };
    let tokens: Vec<&str> = text.split_inclusive(' ').collect();
    let mut events: Vec<Result<String, io::Error>> = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for token in tokens.iter().take(cut.unwrap_or(tokens.len())) {
        events.push(chunk(json!({"content": token}), Value::Null));
    }
    if cut.is_some() {
        // A body error makes hyper drop the connection without the final chunk: the client
        // sees the stream break half-way, as when a provider's process dies.
        events.push(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "provider crashed mid-stream",
        )));
    } else {
        events.push(chunk(json!({}), json!("stop")));
        events.push(Ok("data: [DONE]\n\n".to_owned()));
    }
    let body = futures::stream::iter(events).then(|event| async move {
        tokio::time::sleep(TOKEN_DELAY).await;
        event
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The client side
// ---------------------------------------------------------------------------------------------

/// Which provider a response came from, put in its extensions by the member.
#[derive(Debug, Clone, Copy)]
struct Provider(&'static str);

/// An error that names the provider it came from.
#[derive(Debug)]
struct ProviderError {
    provider: &'static str,
    error: BoxError,
}

impl ProviderError {
    fn new(provider: &'static str, error: impl Into<BoxError>) -> Self {
        ProviderError {
            provider,
            error: error.into(),
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.provider, self.error)
    }
}

impl Error for ProviderError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.error)
    }
}

/// `error` and its causes, `: `-separated: reqwest's own message ("request or response body
/// error") says little, the cause underneath says what happened.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// Points a request built against [`PLACEHOLDER`] at a provider's API root. The path is kept
/// relative to the root because providers mount the same API under different prefixes.
fn rebase(root: &Url, url: &Url) -> Url {
    let mut rebased = root
        .join(url.path().trim_start_matches('/'))
        .expect("a relative path joins onto an http base URL");
    rebased.set_query(url.query());
    rebased
}

/// One failover member: the provider's own client and breaker, with the request pointed at the
/// provider and errors and responses labelled with its name.
///
/// Every member is built by this one function, so all of them have one type, as `Failover`
/// needs (no boxing).
fn member(
    name: &'static str,
    root: Url,
    breaker: CircuitBreakerLayer<EndOfStream>,
    client: reqwest::Client,
) -> impl Service<reqwest::Request, Response = reqwest::Response, Error = BoxError> {
    ServiceBuilder::new()
        .map_err(move |error: BoxError| -> BoxError { Box::new(ProviderError::new(name, error)) })
        .map_response(move |mut res: reqwest::Response| {
            // A body error surfaces long after `call` returned; the tag lets the reader of the
            // body say which provider broke.
            res.extensions_mut().insert(Provider(name));
            res
        })
        .map_request(move |mut req: reqwest::Request| {
            *req.url_mut() = rebase(&root, req.url());
            req
        })
        .layer(breaker)
        .service(client)
}

/// The request every provider gets, before a member points it at its provider.
fn chat_request(prompt: &str, stream: bool) -> reqwest::Request {
    let url = Url::parse(PLACEHOLDER)
        .and_then(|base| base.join("chat/completions"))
        .expect("the placeholder is a valid URL");
    let mut req = reqwest::Request::new(Method::POST, url);
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    });
    *req.body_mut() = Some(body.to_string().into());
    req
}

/// What became of one attempt, for the checks at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Answered,
    /// The stream broke after this many tokens.
    Cut(usize),
    /// The provider refused with this status.
    Refused(u16),
    /// No usable response.
    Failed,
}

/// What a stream delivered before it reached `[DONE]`, ended or broke.
struct Streamed {
    text: String,
    tokens: usize,
    error: Option<BoxError>,
}

/// Prints a streamed answer token by token, up to `data: [DONE]`.
async fn read_stream(res: reqwest::Response) -> Streamed {
    let mut out = Streamed {
        text: String::new(),
        tokens: 0,
        error: None,
    };
    let mut body = res.bytes_stream();
    let mut pending = Vec::new();
    while let Some(bytes) = body.next().await {
        match bytes {
            Ok(bytes) => pending.extend_from_slice(&bytes),
            Err(e) => {
                out.error = Some(e.into());
                return out;
            }
        }
        // An event may arrive split across reads: handle only complete ones.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim_start) else {
                    continue;
                };
                if data == "[DONE]" {
                    // Return without reading the rest: `body` is dropped here, as SDKs do, and
                    // the breaker has already counted the `[DONE]` as a success.
                    return out;
                }
                let chunk: Value = match serde_json::from_str(data) {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        out.error = Some(e.into());
                        return out;
                    }
                };
                if let Some(token) = chunk["choices"][0]["delta"]["content"].as_str() {
                    if !token.is_empty() {
                        print!("{token}");
                        let _ = io::stdout().flush();
                        out.text.push_str(token);
                        out.tokens += 1;
                    }
                }
            }
        }
    }
    out.error = Some("the stream ended without `data: [DONE]`".into());
    out
}

/// Transitions reported by the breakers' listeners, printed between attempts so that they do
/// not land in the middle of a streamed answer.
type Log = Arc<Mutex<Vec<String>>>;

fn print_log(log: &Log) {
    for line in log.lock().unwrap().drain(..) {
        println!("   ~ {line}");
    }
}

/// Asks `llm`, retrying as an SDK would; every attempt goes through the failover again, so the
/// breakers decide where a retry goes.
async fn ask<S>(
    llm: &mut S,
    prompt: &str,
    stream: bool,
    log: &Log,
    trace: &mut Vec<(&'static str, Attempt)>,
) -> Result<(&'static str, String), BoxError>
where
    S: Service<reqwest::Request, Response = reqwest::Response, Error = BoxError>,
{
    let mode = if stream { "stream" } else { "json" };
    println!("\n> [{mode}] {prompt}");
    for _ in 0..MAX_ATTEMPTS {
        // An error here means no member is left at all: nothing to retry.
        let ready = llm.ready().await?;
        // Waiting for readiness may have half-opened a circuit.
        print_log(log);
        let res = match ready.call(chat_request(prompt, stream)).await {
            Ok(res) => res,
            Err(error) => {
                let provider = error
                    .downcast_ref::<ProviderError>()
                    .map_or("unknown", |e| e.provider);
                println!("   ! {}; retrying", chain(&*error));
                print_log(log);
                trace.push((provider, Attempt::Failed));
                continue;
            }
        };
        let provider = res
            .extensions()
            .get::<Provider>()
            .map_or("unknown", |p| p.0);
        let status = res.status();
        if !status.is_success() {
            let retry_after = res
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(", retry-after {v} s"))
                .unwrap_or_default();
            let body: Value = res.json().await.unwrap_or_default();
            let message = body["error"]["message"].as_str().unwrap_or("no message");
            let error = ProviderError::new(provider, format!("{status}{retry_after}: {message}"));
            println!("   ! {}; retrying", chain(&error));
            print_log(log);
            trace.push((provider, Attempt::Refused(status.as_u16())));
            continue;
        }
        if !stream {
            let answer = res.json::<Value>().await.map(|body| {
                body["choices"][0]["message"]["content"]
                    .as_str()
                    .map(str::to_owned)
            });
            match answer {
                Ok(Some(text)) => {
                    println!("   {provider} | {text}");
                    print_log(log);
                    trace.push((provider, Attempt::Answered));
                    return Ok((provider, text));
                }
                Ok(None) => {
                    println!("   ! {provider}: the completion has no message; retrying");
                    trace.push((provider, Attempt::Failed));
                }
                Err(e) => {
                    println!("   ! {}; retrying", chain(&ProviderError::new(provider, e)));
                    trace.push((provider, Attempt::Failed));
                }
            }
            print_log(log);
            continue;
        }
        print!("   {provider} | ");
        let streamed = read_stream(res).await;
        println!();
        match streamed.error {
            None => {
                print_log(log);
                trace.push((provider, Attempt::Answered));
                return Ok((provider, streamed.text));
            }
            Some(error) => {
                let error = ProviderError::new(
                    provider,
                    format!(
                        "stream broke after {} tokens ({}); dropping the partial answer",
                        streamed.tokens,
                        chain(&*error)
                    ),
                );
                println!("   ! {error}; retrying");
                print_log(log);
                trace.push((provider, Attempt::Cut(streamed.tokens)));
            }
        }
    }
    Err(format!("{prompt:?}: no answer after {MAX_ATTEMPTS} attempts").into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The story takes about two seconds; this bounds a run that hangs.
    tokio::time::timeout(Duration::from_secs(20), run())
        .await
        .map_err(|_| "the example did not finish within 20 s")?
}

async fn run() -> Result<(), BoxError> {
    // provider-a cuts its 3rd and 4th requests half-way, then behaves; provider-b rate-limits
    // its first request; provider-c always answers.
    let servers = [
        start("provider-a", "/v1", |n| match n {
            3 | 4 => Reply::CutAfter(3),
            _ => Reply::Answer,
        })
        .await?,
        start("provider-b", "/openai/v1", |n| match n {
            1 => Reply::RateLimited(1),
            _ => Reply::Answer,
        })
        .await?,
        start("provider-c", "/v1", |_| Reply::Answer).await?,
    ];

    let log: Log = Arc::default();
    let mut members = Vec::new();
    let mut handles: Vec<Handle> = Vec::new();
    for server in &servers {
        println!("{} listening at {}", server.name, server.base);
        let breaker = CircuitBreakerLayer::builder()
            .name(server.name)
            .consecutive_failures(2)
            .open_duration(Duration::from_secs(1))
            .half_open_permits(1)
            .success_threshold(1)
            // A stream that stalls for this long counts as a failure instead of hanging the
            // caller (and holding a half-open probe permit) for good.
            .response_classifier(EndOfStream::new().idle_timeout(Duration::from_secs(2)))
            .build()?;
        let handle = breaker.handle();
        let name = server.name;
        let transitions = log.clone();
        handle.on_transition(move |t| {
            transitions
                .lock()
                .unwrap()
                .push(format!("{name} circuit {t}"))
        });
        // One client per provider: its own connection pool (and, for real providers, its own
        // TLS, proxy and timeout settings). A short connect timeout makes a dead provider fail
        // fast, which the breaker counts.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        members.push((
            server.name,
            member(server.name, server.base.clone(), breaker, client),
        ));
        handles.push(handle);
    }
    let mut llm = Failover::with_names(members);
    let routes = llm.routes();

    let mut trace = Vec::new();
    let mut answered = Vec::new();
    let requests = [
        ("Say hello.", false),
        ("Name three uses of a circuit breaker.", true),
        ("Explain failover in one sentence.", true),
        ("What is a bulkhead?", false),
    ];
    for (prompt, stream) in requests {
        answered.push(ask(&mut llm, prompt, stream, &log, &mut trace).await?.0);
    }

    // provider-a's circuit is open: wait until it lets a probe through.
    let wait = handles[0].stats().retry_after.unwrap_or_default() + Duration::from_millis(50);
    println!(
        "\n... waiting {} ms for provider-a's circuit to half-open",
        wait.as_millis()
    );
    tokio::time::sleep(wait).await;
    for (prompt, stream) in [("Count to five.", true), ("Say goodbye.", false)] {
        answered.push(ask(&mut llm, prompt, stream, &log, &mut trace).await?.0);
    }

    println!("\nbreakers:");
    let served = routes.served();
    for (handle, served) in handles.iter().zip(&served) {
        let s = handle.stats();
        println!(
            "  {:<10}  state={:<9}  ok={}  failed={}  throttled={}  requests routed={}",
            s.name,
            s.state.to_string(),
            s.successful_calls,
            s.failed_calls,
            s.throttled_calls,
            served,
        );
    }

    // Close the clients' pooled connections before the servers wait for them to drain.
    drop(llm);
    for server in servers {
        let _ = server.stop.send(());
        server.task.await??;
    }

    // The story must have happened, so CI notices if it does not.
    let (a, b, c) = ("provider-a", "provider-b", "provider-c");
    assert_eq!(
        trace,
        [
            (a, Attempt::Answered),
            (a, Attempt::Answered),
            (a, Attempt::Cut(3)),
            (a, Attempt::Cut(3)),
            (b, Attempt::Refused(429)),
            (c, Attempt::Answered),
            (c, Attempt::Answered),
            (a, Attempt::Answered),
            (a, Attempt::Answered),
        ],
        "every attempt went where the breakers sent it"
    );
    assert_eq!(answered, [a, a, c, c, a, a]);
    let [sa, sb, sc] = [&handles[0], &handles[1], &handles[2]].map(Handle::stats);
    // provider-a: the JSON answers and the streams read to [DONE] are successes, the two cut
    // streams failures (their responses were 200s), and the successful probe closed it again.
    assert_eq!((sa.successful_calls, sa.failed_calls), (4, 2), "{sa:?}");
    assert_eq!(sa.state, CircuitState::Closed);
    // provider-b: the 429's Retry-After opened the circuit without counting a failure.
    assert_eq!(
        (sb.successful_calls, sb.failed_calls, sb.throttled_calls),
        (0, 0, 1),
        "{sb:?}"
    );
    assert_ne!(
        sb.state,
        CircuitState::Closed,
        "provider-b's circuit opened"
    );
    // provider-c: the fallback answered both requests it was sent.
    assert_eq!((sc.successful_calls, sc.failed_calls), (2, 0), "{sc:?}");
    println!("\nall checks passed");
    Ok(())
}
