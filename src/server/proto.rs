//! The protocol's messages and service traits, generated at build time from `proto/`
//! (see build.rs). The modules nest as the protobuf packages do, because the generated
//! code refers to other packages by relative paths.

#![allow(
    missing_docs,
    dead_code,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]

/// `event_store.*`.
pub mod event_store {
    /// `event_store.client`: types shared by the services.
    pub mod client {
        tonic::include_proto!("event_store.client");

        /// `event_store.client.streams`: appends, reads, subscriptions, deletes.
        pub mod streams {
            tonic::include_proto!("event_store.client.streams");
        }

        /// `event_store.client.server_features`: what the server supports.
        pub mod server_features {
            tonic::include_proto!("event_store.client.server_features");
        }

        /// `event_store.client.gossip`: cluster membership (one node here).
        pub mod gossip {
            tonic::include_proto!("event_store.client.gossip");
        }
    }
}

/// `google.*`.
pub mod google {
    /// `google.rpc`: the status a batch append reports per batch.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// `streamlog.*`: streamlog's own services.
pub mod streamlog {
    /// `streamlog.raft`: the raft traffic between the nodes of a cluster.
    pub mod raft {
        tonic::include_proto!("streamlog.raft");
    }
}
