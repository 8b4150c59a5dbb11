//! `ferry-testkit` (dev only) gives ferry's tests their peers: an in-process fake registry
//! with fault injection ([`fake`]), random but valid images ([`image`]), a TCP proxy that
//! counts bytes and cuts connections at random points ([`cutter`]), and harnesses that
//! start the real components on loopback — `docker-registry`, `skopeo`, `podman`,
//! `containerd` ([`real`]).

pub mod cutter;
pub mod fake;
pub mod files;
pub mod image;
pub mod proxy;
pub mod real;
pub mod tls;
