//! Typed pub/sub through a service's lifecycle: a subscriber receives what a
//! publisher sends, an undecodable message goes to `<topic>.dead`, the registry
//! record lists the subscription, and a stopped service receives nothing more.

// Test helpers outside #[test] functions unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use micro::broker::{handler, Broker, Event, MemoryBroker, Message, Publisher};
use micro::proto::debug::v1::HealthResponse;
use micro::registry::{MemoryRegistry, Registry};

async fn recv<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_service_subscriber_gets_typed_events_and_bad_ones_go_dead() {
    let broker = Arc::new(MemoryBroker::new());
    let registry = Arc::new(MemoryRegistry::new());
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let service = micro::Service::builder()
        .name("watcher")
        .registry(registry.clone())
        .broker(broker.clone())
        .build()
        .unwrap()
        .subscribe("health.changed", move |event: Event<HealthResponse>| {
            let tx = tx.clone();
            async move {
                tx.send((
                    event.message.status.clone(),
                    event.from_service().map(str::to_string),
                ))
                .unwrap();
                Ok(())
            }
        });
    let (dead_tx, mut dead) = tokio::sync::mpsc::unbounded_channel();
    let dead_sub = broker
        .subscribe(
            "health.changed.dead",
            handler(move |d| {
                let dead_tx = dead_tx.clone();
                async move {
                    dead_tx.send(d.message).unwrap();
                    Ok(())
                }
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service.serve(listener, async move {
        let _ = stopped.await;
    }));
    // Registered (and so subscribed) once the record appears.
    let record = loop {
        if let Ok(r) = registry.get_service("watcher").await {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let endpoint = record[0]
        .endpoints
        .iter()
        .find(|e| e.name == "health.changed")
        .unwrap();
    assert_eq!(endpoint.metadata["subscriber"], "true");
    assert_eq!(endpoint.metadata["topic"], "health.changed");
    assert_eq!(endpoint.request.name, "HealthResponse");

    let publisher = Publisher::new("health.changed", broker.clone()).from_service("prober");
    publisher
        .publish(&HealthResponse {
            status: "degraded".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        recv(&mut events).await,
        ("degraded".to_string(), Some("prober".to_string()))
    );

    // Protobuf payloads decode by their content type too.
    publisher
        .clone()
        .format(micro::codec::Format::Proto)
        .publish(&HealthResponse {
            status: "ok".into(),
        })
        .await
        .unwrap();
    assert_eq!(recv(&mut events).await.0, "ok");

    // Not a HealthResponse: logged, moved to the dead-letter topic, no crash.
    let bad = Message::new("{\"status\": 42}")
        .header("content-type", "application/json")
        .header("micro-id", "bad-1");
    broker.publish("health.changed", bad).await.unwrap();
    let letter = recv(&mut dead).await;
    assert_eq!(letter.id(), Some("bad-1"));
    assert!(
        letter.headers["micro-error"].contains("400"),
        "{:?}",
        letter.headers
    );

    // And the subscriber still works afterwards.
    publisher
        .publish(&HealthResponse {
            status: "after".into(),
        })
        .await
        .unwrap();
    assert_eq!(recv(&mut events).await.0, "after");

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    publisher
        .publish(&HealthResponse {
            status: "too late".into(),
        })
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err()
            || events.try_recv().is_err(),
        "a stopped service receives nothing more"
    );
    dead_sub.unsubscribe().await.unwrap();
}

#[tokio::test]
async fn invalid_topics_are_refused() {
    let broker = MemoryBroker::new();
    for topic in ["", "a b", "a.*", "a.>"] {
        let err = broker.publish(topic, Message::new("x")).await.unwrap_err();
        assert_eq!(err.code(), 400, "{topic:?}");
    }
}
