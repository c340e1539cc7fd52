//! Live sync: following the server's change feed (`GET /v1/changes`, Server-Sent
//! Events). The feed sends version numbers only, the data set's current one first; the
//! device runs an ordinary round when a version is newer than its watermark, so a lost
//! notification costs latency, never data, and a reconnect (after a server restart, a
//! dropped connection) catches up by the same comparison.
//!
//! * [`ChangeStream`] ([`SyncClient::watch`]): one open stream, yielding versions.
//! * [`LiveFeed`] ([`SyncClient::live`]): the stream kept open, reopened after
//!   [`ReconnectBackoff`], turned into [`LiveEvent`]s saying when a round is due. The
//!   CLI's `sync --watch` and the app's background task drive it.
//! * [`EventParser`]: the few lines of the SSE format the feed needs (events, data,
//!   comments; any line ending), with a bound on a line's length.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::ClientError;
use crate::engine::SyncClient;
use crate::local::LocalStore;
use crate::schedule::ReconnectBackoff;
use crate::transport::HttpTransport;

/// Longest line the parser accepts; a longer one is a protocol error (a version event
/// is a few dozen bytes).
const MAX_LINE_BYTES: usize = 4096;

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An incremental parser of `text/event-stream`: feed it bytes as they arrive, take the
/// events completed so far.
#[derive(Debug, Default)]
pub struct EventParser {
    line: Vec<u8>,
    /// The previous byte was a `\r` (a following `\n` belongs to the same line end).
    after_cr: bool,
    name: Option<String>,
    data: Option<String>,
}

impl EventParser {
    /// Consumes `bytes` and returns the events they complete, in order. A line longer
    /// than the bound is a [`ClientError::Protocol`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, ClientError> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE_BYTES {
                        return Err(ClientError::Protocol(format!(
                            "the change feed sent a line longer than {MAX_LINE_BYTES} bytes"
                        )));
                    }
                    self.line.push(byte);
                }
            }
        }
        Ok(events)
    }

    /// Takes one complete line; a blank line dispatches the event gathered so far.
    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let name = self.name.take();
            return data.map(|data| SseEvent {
                name: name.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(b":") {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

/// The version an event announces, if it is a `version` event.
fn version_of(event: &SseEvent) -> Result<Option<u64>, ClientError> {
    if event.name != "version" {
        return Ok(None);
    }
    event.data.trim().parse().map(Some).map_err(|_| {
        ClientError::Protocol(format!(
            "the change feed sent a version that is not a number: {:?}",
            event.data
        ))
    })
}

/// One open change stream of the device's data set.
pub struct ChangeStream {
    transport: HttpTransport,
    response: reqwest::Response,
    parser: EventParser,
    ready: VecDeque<u64>,
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStream")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl ChangeStream {
    /// Opens the stream through `transport`.
    pub(crate) async fn open(transport: &HttpTransport) -> Result<Self, ClientError> {
        let response = transport.open_changes().await?;
        Ok(Self {
            transport: transport.clone(),
            response,
            parser: EventParser::default(),
            ready: VecDeque::new(),
        })
    }

    /// The next version the server announces (the first is its version at connect).
    /// The stream's end is [`ClientError::Unreachable`]: the server closed it (restart,
    /// revoked token) or the connection broke; open a new one.
    pub async fn next_version(&mut self) -> Result<u64, ClientError> {
        loop {
            if let Some(version) = self.ready.pop_front() {
                return Ok(version);
            }
            let Some(chunk) = self.transport.next_chunk(&mut self.response).await? else {
                return Err(self
                    .transport
                    .unreachable_because("the change stream was closed"));
            };
            for event in self.parser.push(&chunk)? {
                if let Some(version) = version_of(&event)? {
                    self.ready.push_back(version);
                }
            }
        }
    }
}

/// What following the feed brings.
#[derive(Debug)]
pub enum LiveEvent {
    /// A stream is open: the device is live. `behind` says the server's version is
    /// newer than this device's watermark (changes were made while it was not
    /// listening): run a round.
    Connected {
        /// The server's version of the data set.
        version: u64,
        /// Whether a round is due.
        behind: bool,
    },
    /// The server has a version this device has not pulled: run a round.
    Changed {
        /// The server's new version.
        version: u64,
    },
    /// The stream could not be opened or ended; the next attempt waits `retry_in`.
    /// Until then only interval rounds bring changes.
    Lost {
        /// Why.
        error: ClientError,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
}

/// The change feed kept open: see the module documentation. Each call to
/// [`LiveFeed::next`] waits for the next event.
pub struct LiveFeed {
    transport: HttpTransport,
    store: Arc<LocalStore>,
    stream: Option<ChangeStream>,
    backoff: ReconnectBackoff,
    wait: Option<Duration>,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed")
            .field("connected", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

impl LiveFeed {
    pub(crate) fn new(transport: HttpTransport, store: Arc<LocalStore>) -> Self {
        Self {
            transport,
            store,
            stream: None,
            backoff: ReconnectBackoff::default(),
            wait: None,
        }
    }

    /// Whether a stream is open now.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether the server's `version` is newer than what this device pulled.
    async fn is_behind(&self, version: u64) -> Result<bool, ClientError> {
        let store = self.store.clone();
        let watermark = tokio::task::spawn_blocking(move || store.watermark())
            .await
            .map_err(|e| ClientError::Task(e.to_string()))??;
        Ok(version > watermark)
    }

    /// Waits for the next event: (re)connects when no stream is open (after the
    /// backoff), and skips versions this device already has.
    pub async fn next(&mut self) -> LiveEvent {
        loop {
            let result = match self.stream.as_mut() {
                None => {
                    if let Some(wait) = self.wait.take() {
                        tokio::time::sleep(wait).await;
                    }
                    self.connect().await
                }
                Some(stream) => match stream.next_version().await {
                    Ok(version) => match self.is_behind(version).await {
                        Ok(true) => Ok(Some(LiveEvent::Changed { version })),
                        Ok(false) => Ok(None),
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                },
            };
            match result {
                Ok(Some(event)) => return event,
                Ok(None) => {}
                Err(error) => {
                    self.stream = None;
                    let retry_in = self.backoff.failed();
                    self.wait = Some(retry_in);
                    return LiveEvent::Lost { error, retry_in };
                }
            }
        }
    }

    /// Opens a stream and reads its first event, the server's version at connect.
    async fn connect(&mut self) -> Result<Option<LiveEvent>, ClientError> {
        let mut stream = ChangeStream::open(&self.transport).await?;
        let version = stream.next_version().await?;
        let behind = self.is_behind(version).await?;
        self.stream = Some(stream);
        self.backoff.connected();
        Ok(Some(LiveEvent::Connected { version, behind }))
    }
}

impl SyncClient {
    /// Opens one change stream of this device's data set (see [`ChangeStream`]).
    pub async fn watch(&self) -> Result<ChangeStream, ClientError> {
        ChangeStream::open(self.transport()).await
    }

    /// The change feed kept open, with reconnects (see [`LiveFeed`]). Independent of
    /// this client's rounds: run them as its events say.
    pub fn live(&self) -> LiveFeed {
        LiveFeed::new(self.transport().clone(), self.store_handle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            name: name.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_are_dispatched_at_a_blank_line_whatever_the_chunking() {
        let text = b"event: version\ndata: 7\n\n: keep-alive\n\nevent: version\r\ndata:12\r\n\r\n";
        let mut whole = EventParser::default();
        let all = whole.push(text).unwrap();
        assert_eq!(all, vec![event("version", "7"), event("version", "12")]);
        let mut bytewise = EventParser::default();
        let mut pieces = Vec::new();
        for byte in text {
            pieces.extend(bytewise.push(&[*byte]).unwrap());
        }
        assert_eq!(pieces, all);
    }

    #[test]
    fn comments_and_unknown_fields_dispatch_nothing_and_data_lines_join() {
        let mut parser = EventParser::default();
        assert!(
            parser
                .push(b": keep-alive\n\nid: 3\nretry: 10\n\n")
                .unwrap()
                .is_empty()
        );
        let events = parser.push(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!(events, vec![event("message", "a\nb")]);
        assert_eq!(version_of(&events[0]).unwrap(), None);
        assert_eq!(version_of(&event("version", "42")).unwrap(), Some(42));
        assert!(matches!(
            version_of(&event("version", "forty")),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn a_line_without_end_cannot_grow_without_bound() {
        let mut parser = EventParser::default();
        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        assert!(matches!(parser.push(&long), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line() {
        let mut parser = EventParser::default();
        let events = parser.push(b"event: version\rdata: 5\r\r").unwrap();
        assert_eq!(events, vec![event("version", "5")]);
    }
}
