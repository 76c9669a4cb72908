//! The collector's standard gRPC services answer over mTLS: health reports
//! `sonde.v1.AgentService` as SERVING and reflection lists the services.

use sonde_proto::Role;
use sonde_tests::{World, grpc_channel};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_over_mtls() {
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;
    let viewer = world.cert("acme", Role::Viewer, "v");
    let ch = grpc_channel(&world, &viewer).await;

    let status = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "sonde.v1.AgentService".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = stream
        .message()
        .await
        .expect("reflection reply")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "sonde.v1.AgentService",
            "sonde.v1.QueryService"
        ]
    );
}
