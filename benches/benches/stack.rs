//! The stack's cost per round trip on an in-memory wire: two stacks, no kernel, no clock.
//! What is measured is smoltcp plus our framing, pre-parse and socket table, per message.

use std::net::SocketAddrV4;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stack::testing::{Pair, IP_A, IP_B};
use stack::Error;

fn udp_round_trip(c: &mut Criterion) {
    let mut p = Pair::new();
    let a = p.a.stack.udp_bind(SocketAddrV4::new(IP_A, 9000)).unwrap();
    let b = p.b.stack.udp_bind(SocketAddrV4::new(IP_B, 9000)).unwrap();
    let msg = [7u8; 64];
    let mut buf = [0u8; 2048];
    let mut g = c.benchmark_group("stack");
    g.throughput(Throughput::Elements(1));
    g.bench_function("udp_64B_round_trip", |bench| {
        bench.iter(|| {
            p.a.stack
                .udp_send_to(a, &msg, SocketAddrV4::new(IP_B, 9000))
                .unwrap();
            p.step();
            let (n, from) = p.b.stack.udp_recv_from(b, &mut buf).unwrap();
            p.b.stack.udp_send_to(b, &buf[..n], from).unwrap();
            p.step();
            p.step();
            p.a.stack.udp_recv_from(a, &mut buf).unwrap()
        })
    });
    g.finish();
}

fn tcp_round_trip(c: &mut Criterion) {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(SocketAddrV4::new(IP_B, 80), 8)
            .unwrap();
    let a =
        p.a.stack
            .tcp_connect(SocketAddrV4::new(IP_A, 40000), SocketAddrV4::new(IP_B, 80))
            .unwrap();
    let mut server = None;
    assert!(p.run_until(smoltcp::time::Duration::from_secs(1), |p| {
        if server.is_none() {
            server = p.b.stack.tcp_accept(l).ok().map(|(s, _)| s);
        }
        server.is_some() && p.a.stack.readiness(a).writable
    }));
    let b = server.unwrap();
    let msg = [7u8; 64];
    let mut buf = [0u8; 2048];
    let mut g = c.benchmark_group("stack");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp_64B_round_trip", |bench| {
        bench.iter(|| {
            p.a.stack.tcp_send(a, &msg).unwrap();
            let n = loop {
                p.step();
                match p.b.stack.tcp_recv(b, &mut buf) {
                    Ok(n) => break n,
                    Err(Error::WouldBlock) => continue,
                    Err(e) => panic!("{e}"),
                }
            };
            p.b.stack.tcp_send(b, &buf[..n]).unwrap();
            loop {
                p.step();
                match p.a.stack.tcp_recv(a, &mut buf) {
                    Ok(n) => break n,
                    Err(Error::WouldBlock) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, udp_round_trip, tcp_round_trip);
criterion_main!(benches);
