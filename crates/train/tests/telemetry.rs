//! The Prometheus endpoint serves what the loop exports and the probes' paths, and survives a
//! client that sends junk.
//! (Its own test binary: the metrics recorder is process-wide.)

use std::io::{Read, Write};
use std::net::TcpStream;

use ringsam_train::StepReport;
use ringsam_train::grad_sync::ExchangeStats;
use ringsam_train::telemetry::{export_step, serve_prometheus};

fn get(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut c = TcpStream::connect(addr)?;
    c.write_all(request)?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn metrics_endpoint_serves_the_step_metrics() {
    let addr = serve_prometheus("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    let x = ExchangeStats { bytes: 4096, seconds: 0.25, exposed_seconds: 0.05 };
    let r = StepReport {
        loss: 1.5,
        error_rate: 0.5,
        grad_norm: 1.0,
        ascent_grad_norm: 1.0,
        param_norm: 2.0,
        ascent_exchange: x,
        descent_exchange: ExchangeStats { bytes: 8192, ..x },
    };
    let probe = |path: &str| get(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    assert!(probe("/healthz").starts_with("HTTP/1.1 200 OK"));
    let not_ready = probe("/readyz");
    assert!(not_ready.starts_with("HTTP/1.1 503") && not_ready.ends_with("no step taken yet\n"), "{not_ready}");
    export_step(&r, 0.5, 64, 2, 1);
    assert!(probe("/readyz?verbose=1").starts_with("HTTP/1.1 200 OK"));
    export_step(&r, 0.5, 64, 2, 3); // the loader's running total of skipped samples
    // A client sending 64 KiB of junk without a blank line: the endpoint reads 8 KiB at most,
    // answers and closes (the unread rest may reset the connection), then serves the next one.
    let _ = get(addr, &vec![b'x'; 64 << 10]);
    let text = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for want in [
        "ringsam_steps_total{rank=\"3\"} 2",
        "ringsam_images_per_second{rank=\"3\"} 128",
        "ringsam_loader_queue_depth{rank=\"3\"} 2",
        "ringsam_loader_skipped_total{rank=\"3\"} 3",
        "ringsam_allreduce_bytes_total{rank=\"3\",exchange=\"ascent\"} 8192",
        "ringsam_allreduce_bytes_total{rank=\"3\",exchange=\"descent\"} 16384",
        "ringsam_allreduce_exposed_seconds{rank=\"3\",exchange=\"descent\"} 0.05",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
