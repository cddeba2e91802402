//! Jaeger agent protocol over UDP: one `Agent.emitBatch` oneway call per datagram, thrift
//! compact on :6831 and thrift binary on :6832.
//!
//! The socket loop only copies datagrams into a bounded queue; decoding and storing run
//! on workers, so a slow store never stalls the socket. A full queue drops the datagram
//! and counts it (UDP has no way to push back), as does a datagram for which the ingest
//! byte budget, shared with the TCP receivers, has no room. The per-span limits apply in
//! `Ingest::accept`, as for every protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use spindle_codec::{CodecError, Decoded};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use super::admission::ByteBudget;
use crate::ingest::Ingest;
use crate::limits::Limit;
use crate::telemetry::{DatagramLabels, Telemetry};
use crate::tenancy::Caller;

/// Jaeger clients keep datagrams under 65,000 bytes; a little more is accepted.
const MAX_DATAGRAM: usize = 65_535;
const QUEUE_DATAGRAMS: usize = 1_000;
const WORKERS: usize = 2;

#[derive(Clone, Copy)]
pub enum Flavor {
    Compact,
    Binary,
}

impl Flavor {
    pub fn protocol(self) -> &'static str {
        match self {
            Flavor::Compact => "jaeger_thrift_compact_udp",
            Flavor::Binary => "jaeger_thrift_binary_udp",
        }
    }

    fn decode(self, datagram: &[u8]) -> Result<Decoded, CodecError> {
        match self {
            Flavor::Compact => spindle_codec::jaeger_thrift::decode_emit_batch_compact(datagram),
            Flavor::Binary => spindle_codec::jaeger_thrift::decode_emit_batch_binary(datagram),
        }
    }
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    use anyhow::Context;
    let socket = UdpSocket::bind(addr).await.with_context(|| format!("binding jaeger udp listener on {addr}"))?;
    tracing::info!(%addr, "jaeger udp listening");
    Ok(socket)
}

fn count(telemetry: &Telemetry, flavor: Flavor, outcome: &'static str) {
    telemetry
        .server
        .datagrams
        .get_or_create(&DatagramLabels { protocol: flavor.protocol().to_string(), outcome })
        .inc();
}

pub async fn serve(
    socket: UdpSocket,
    flavor: Flavor,
    ingest: Arc<Ingest>,
    telemetry: Arc<Telemetry>,
    budget: Arc<ByteBudget>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // A datagram holds its bytes of the budget until its spans are stored or refused.
    let (tx, rx) = mpsc::channel::<(Vec<u8>, OwnedSemaphorePermit)>(QUEUE_DATAGRAMS);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let rx = Arc::clone(&rx);
        let ingest = Arc::clone(&ingest);
        let telemetry = Arc::clone(&telemetry);
        workers.push(tokio::spawn(async move {
            let mut logged = 0u32;
            loop {
                let Some((datagram, reserved)) = rx.lock().await.recv().await else { break };
                let decoded = ingest.decode(move || flavor.decode(&datagram)).await;
                match decoded {
                    Ok(Ok(decoded)) => {
                        if ingest.accept(&Caller::anonymous(), flavor.protocol(), decoded).await.is_err() {
                            count(&telemetry, flavor, "dropped");
                        }
                    }
                    Ok(Err(e)) => {
                        count(&telemetry, flavor, "rejected");
                        ingest.count_failed_request(flavor.protocol());
                        // The first few tell what is wrong; the counter tells how often.
                        if logged < 10 {
                            logged += 1;
                            tracing::warn!(protocol = flavor.protocol(), error = %e, "undecodable datagram");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "datagram decode task failed"),
                }
                drop(reserved);
            }
        }));
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok((len, _peer)) = received else { continue };
        count(&telemetry, flavor, "received");
        let Some(reserved) = budget.try_reserve(len) else {
            telemetry.limits.hit(Limit::InflightBytes, 1, &format_args!("{} datagram dropped", flavor.protocol()));
            count(&telemetry, flavor, "dropped");
            continue;
        };
        if tx.try_send((buf[..len].to_vec(), reserved)).is_err() {
            count(&telemetry, flavor, "dropped");
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}
