//! Per-packet cost of the stack as connections grow: two stacks on an in-memory wire with
//! 10, 1,000 and 10,000 established connections, one 64-byte request and its 64-byte reply per
//! iteration (two packets, each through one stack's egress and the other's ingress; the ACKs
//! ride on the data). `one` uses the same connection every time (what the stack's own work
//! costs: finding the socket, timers, egress); `spread` goes round all of them (each packet
//! also finds its socket's memory cold, as a server with that many busy clients does).
//! Buffers are 4 KiB per socket and direction, so 20,000 sockets fit in little memory; their
//! size does not change what a 64-byte packet costs.

use std::net::{Ipv4Addr, SocketAddrV4};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smoltcp::time::Duration;
use stack::testing::{Pair, IP_A, IP_B};
use stack::{Error, SocketId};

fn setup(n: usize) -> (Pair, Vec<SocketId>, Vec<SocketId>) {
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    let l =
        p.b.stack
            .tcp_listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 4096)
            .unwrap();
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    let mut port = 10000u16;
    while clients.len() < n {
        for _ in 0..(n - clients.len()).min(1000) {
            clients.push(
                p.a.stack
                    .tcp_connect(SocketAddrV4::new(IP_A, port), SocketAddrV4::new(IP_B, 80))
                    .unwrap(),
            );
            port += 1;
        }
        let want = clients.len();
        assert!(p.run_until(Duration::from_secs(10), |p| {
            while let Ok((s, _)) = p.b.stack.tcp_accept(l) {
                servers.push(s);
            }
            servers.len() == want
        }));
    }
    p.settle_and_advance(Duration::from_millis(0));
    (p, clients, servers)
}

fn recv(p: &mut Pair, on_b: bool, s: SocketId, buf: &mut [u8]) -> usize {
    loop {
        p.step();
        let r = if on_b {
            p.b.stack.tcp_recv(s, buf)
        } else {
            p.a.stack.tcp_recv(s, buf)
        };
        match r {
            Ok(n) => return n,
            Err(Error::WouldBlock) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

fn per_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    g.throughput(Throughput::Elements(2));
    for n in [10usize, 1_000, 10_000] {
        let (mut p, clients, servers) = setup(n);
        let msg = [7u8; 64];
        let mut buf = [0u8; 256];
        for spread in [false, true] {
            let mut i = 0usize;
            let name = if spread { "spread" } else { "one" };
            g.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter(|| {
                    let k = if spread { i % n } else { n / 2 };
                    i += 1;
                    p.a.stack.tcp_send(clients[k], &msg).unwrap();
                    let got = recv(&mut p, true, servers[k], &mut buf);
                    p.b.stack.tcp_send(servers[k], &buf[..got]).unwrap();
                    recv(&mut p, false, clients[k], &mut buf)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, per_packet);
criterion_main!(benches);
