//! What the parts of a running factory share: the configuration in force and the enrollment
//! token (both replaced by a reload), the inventory, the sink, the listener's TLS, the metrics,
//! the registry of live sessions, the agents' boot references and the shutdown signal. Built
//! once by `Factory::open` (in `server`); every part reads through an accessor named for its role,
//! and only the server replaces the configuration and token.

use crate::clock::BootReferences;
use crate::config::FactoryConfig;
use crate::inventory::Inventory;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::sink::FactSink;
use crate::tls::TlsListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The running factory's shared state.
pub struct Context {
    config: RwLock<Arc<FactoryConfig>>,
    config_path: Option<PathBuf>,
    token: RwLock<String>,
    inventory: Inventory,
    sink: Arc<dyn FactSink>,
    tls: Option<Arc<TlsListener>>,
    metrics: Arc<Metrics>,
    registry: Registry,
    boots: BootReferences,
    shutdown: Shutdown,
}

/// The parts [`Context::new`] takes.
pub struct Parts {
    /// The validated configuration.
    pub config: FactoryConfig,
    /// The file it came from (for reload).
    pub config_path: Option<PathBuf>,
    /// The enrollment token in force.
    pub token: String,
    /// The opened inventory.
    pub inventory: Inventory,
    /// The started sink.
    pub sink: Arc<dyn FactSink>,
    /// The listener's certificate, with a `tls` section.
    pub tls: Option<Arc<TlsListener>>,
    /// The counters.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context with no session yet.
    pub fn new(p: Parts) -> Context {
        Context {
            config: RwLock::new(Arc::new(p.config)),
            config_path: p.config_path,
            token: RwLock::new(p.token),
            inventory: p.inventory,
            sink: p.sink,
            tls: p.tls,
            metrics: p.metrics,
            registry: Registry::default(),
            boots: BootReferences::default(),
            shutdown: Shutdown::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<FactoryConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `cfg` in force (reload).
    pub fn set_config(&self, cfg: Arc<FactoryConfig>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = cfg;
    }

    /// The config file, when there is one.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The enrollment token in force.
    pub fn token(&self) -> String {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the enrollment token (reload).
    pub fn set_token(&self, token: String) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// The client inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Where facts go.
    pub fn sink(&self) -> &Arc<dyn FactSink> {
        &self.sink
    }

    /// The agent listener's TLS, when configured.
    pub fn tls(&self) -> Option<&TlsListener> {
        self.tls.as_deref()
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The live sessions.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Agents' boot references from earlier connections (see [`crate::clock`]).
    pub fn boots(&self) -> &BootReferences {
        &self.boots
    }

    /// The stop signal and the drain.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}
