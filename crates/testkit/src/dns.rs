//! A DNS server on loopback, for tests that look TXT records up through the real resolver:
//! UDP and TCP on the same port, answers from the records a test publishes, `NXDOMAIN` for
//! every other name. A UDP answer longer than 512 bytes is truncated, as a server without
//! EDNS would, so the client has to ask again over TCP. On request it answers over DNS over
//! HTTPS too ([`TestDns::serve_https`]).

mod https;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

pub use https::DohEndpoint;

/// How the server treats every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers from the published records.
    Answer,
    /// Answers `SERVFAIL`, as a resolver whose upstream is down does.
    ServFail,
    /// Reads queries and never answers.
    Silent,
}

#[derive(Debug)]
struct Zone {
    /// Lower-case names without the trailing dot → their TXT values.
    records: Mutex<HashMap<String, Vec<String>>>,
    behaviour: Mutex<Behaviour>,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
    https_queries: AtomicUsize,
}

/// The running server; it stops when dropped.
#[derive(Debug)]
pub struct TestDns {
    address: SocketAddr,
    zone: Arc<Zone>,
    tasks: Vec<JoinHandle<()>>,
}

/// The UDP answer size above which the answer is truncated (RFC 1035's limit without EDNS).
const UDP_LIMIT: usize = 512;

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestDns {
    /// A server answering from no records yet.
    pub async fn start() -> Self {
        let (udp, tcp) = bind_both().await;
        let address = udp.local_addr().expect("a bound address");
        let zone = Arc::new(Zone {
            records: Mutex::default(),
            behaviour: Mutex::new(Behaviour::Answer),
            udp_queries: AtomicUsize::new(0),
            tcp_queries: AtomicUsize::new(0),
            https_queries: AtomicUsize::new(0),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, zone.clone())),
            tokio::spawn(serve_tcp(tcp, zone.clone())),
        ];
        Self {
            address,
            zone,
            tasks,
        }
    }

    /// Where it listens (the same port over UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Adds a TXT record holding `value` at `name`.
    pub fn publish(&self, name: &str, value: &str) {
        self.zone
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key(name))
            .or_default()
            .push(value.to_owned());
    }

    /// From now on, treats queries so.
    pub fn behave(&self, behaviour: Behaviour) {
        *self
            .zone
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Queries received over UDP and over TCP so far.
    pub fn queries(&self) -> (usize, usize) {
        (
            self.zone.udp_queries.load(Ordering::SeqCst),
            self.zone.tcp_queries.load(Ordering::SeqCst),
        )
    }

    /// Queries received over DNS over HTTPS so far.
    pub fn https_queries(&self) -> usize {
        self.zone.https_queries.load(Ordering::SeqCst)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket and a TCP listener on one loopback port (a port free for UDP may be taken
/// for TCP, so a few are tried).
async fn bind_both() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP port");
        let address = udp.local_addr().expect("a bound address");
        if let Ok(tcp) = TcpListener::bind(address).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// A TXT record's data, in strings of at most 255 bytes (the longest one may be).
fn txt(value: &str) -> RData {
    let parts = value.as_bytes().chunks(255).collect::<Vec<_>>();
    RData::TXT(TXT::from_bytes(parts))
}

/// The zone's SOA record, which a negative answer carries as real servers' do: its minimum
/// (300 s) is how long a resolver may cache the "no such record".
fn soa(name: &Name) -> Record {
    let apex = name.base_name();
    let host = |label: &str| {
        Name::from_ascii(label)
            .and_then(|label| label.append_domain(&apex))
            .unwrap_or_else(|_| apex.clone())
    };
    let data = SOA::new(host("ns"), host("hostmaster"), 1, 3600, 600, 86_400, 300);
    Record::from_rdata(apex.clone(), 300, RData::SOA(data))
}

impl Zone {
    /// The answer to `query`, or none when the server is silent or cannot read it.
    fn answer(&self, query: &[u8]) -> Option<Message> {
        let request = Message::from_vec(query).ok()?;
        let behaviour = *self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_queries(request.queries.clone());
        match behaviour {
            Behaviour::Silent => return None,
            Behaviour::ServFail => {
                response.metadata.response_code = ResponseCode::ServFail;
                return Some(response);
            }
            Behaviour::Answer => {}
        }
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        for question in &request.queries {
            match records.get(&key(&question.name.to_ascii())) {
                None => {
                    response.metadata.response_code = ResponseCode::NXDomain;
                    response.add_authority(soa(&question.name));
                }
                Some(values) if question.query_type == RecordType::TXT => {
                    for value in values {
                        response.add_answer(Record::from_rdata(
                            question.name.clone(),
                            60,
                            txt(value),
                        ));
                    }
                }
                // The name exists, with no record of the type asked for.
                Some(_) => {
                    response.add_authority(soa(&question.name));
                }
            }
        }
        response.metadata.authoritative = true;
        Some(response)
    }
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buffer = vec![0; 4096];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        zone.udp_queries.fetch_add(1, Ordering::SeqCst);
        let Some(response) = zone.answer(&buffer[..length]) else {
            continue;
        };
        let Ok(mut bytes) = response.to_vec() else {
            continue;
        };
        if bytes.len() > UDP_LIMIT {
            let Ok(truncated) = response.truncate().to_vec() else {
                continue;
            };
            bytes = truncated;
        }
        let _ = socket.send_to(&bytes, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, zone.clone()));
    }
}

/// Length-prefixed messages (RFC 1035 §4.2.2) until the client closes the connection.
async fn serve_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let Ok(length) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0; usize::from(length)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        zone.tcp_queries.fetch_add(1, Ordering::SeqCst);
        let Some(bytes) = zone
            .answer(&query)
            .and_then(|response| response.to_vec().ok())
        else {
            continue;
        };
        let Ok(length) = u16::try_from(bytes.len()) else {
            return;
        };
        if stream.write_u16(length).await.is_err() || stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}
