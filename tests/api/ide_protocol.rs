//! Just enough of code-server's (VS Code's) remote protocol to prove a WebSocket through the proxy carries real
//! traffic: the client's `auth` control message, and code-server's `sign` answer.
//!
//! Each protocol message has a 13-byte header (type u8, id u32, ack u32, length u32, big-endian) and a body;
//! type 2 is a control message, whose body is JSON.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const CONTROL: u8 = 2;

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(13 + body.len());
    m.push(kind);
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn request(
    addr: std::net::SocketAddr,
    base: &str,
    cookie: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let token = format!("{:032x}", rand::random::<u128>());
    let url = format!("ws://{addr}{base}?reconnectionToken={token}&reconnection=false&skipWebSocketFrames=false");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", format!("http://{addr}").parse().unwrap());
    req
}

/// Opens the IDE's WebSocket under `base`, sends `auth`, and returns the first control message's JSON.
pub async fn handshake(addr: std::net::SocketAddr, base: &str, cookie: &str) -> String {
    let (mut ws, resp) = tokio_tungstenite::connect_async(request(addr, base, cookie)).await.expect("websocket opens");
    assert_eq!(resp.status(), 101);
    let auth = br#"{"type":"auth","auth":"00000000000000000000","data":""}"#;
    ws.send(Message::binary(frame(CONTROL, auth))).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    // The protocol is a byte stream: its messages need not line up with WebSocket frames (a KeepAlive, type 9,
    // may share a frame with the answer).
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.expect("an answer in time");
        let Some(Ok(msg)) = msg else { panic!("connection ended without an answer: {msg:?}") };
        buf.extend_from_slice(&msg.into_data());
        while buf.len() >= 13 {
            let size = u32::from_be_bytes(buf[9..13].try_into().unwrap()) as usize;
            if buf.len() < 13 + size {
                break;
            }
            if buf[0] == CONTROL {
                let _ = ws.close(None).await;
                return String::from_utf8_lossy(&buf[13..13 + size]).into_owned();
            }
            buf.drain(..13 + size);
        }
    }
}

/// Tries to open the WebSocket and returns the HTTP status of the refusal (101 when it opens).
pub async fn try_upgrade(addr: std::net::SocketAddr, base: &str, cookie: &str) -> u16 {
    match tokio_tungstenite::connect_async(request(addr, base, cookie)).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected websocket error: {e}"),
    }
}
