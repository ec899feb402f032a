use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, WatchParams, WatchEvent};
#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter("kube_client=trace,hyper=trace").init();
    let dir = "/tmp/skiff-test-manual";
    let r = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
    let client = skiff_controllers::client_from_pem("https://127.0.0.1:17643", &r("ca.pem"), &r("cert.pem"), &r("key.pem")).await.unwrap();
    let api: Api<ConfigMap> = Api::all(client);
    let mut s = api.watch(&WatchParams::default(), "10").await.unwrap().boxed();
    eprintln!("watch opened");
    while let Some(e) = s.next().await {
        match e { Ok(WatchEvent::Added(c)) => eprintln!("added {:?}", c.metadata.name), Ok(o) => eprintln!("other {:?}", o), Err(e) => eprintln!("err {e}") }
    }
}
