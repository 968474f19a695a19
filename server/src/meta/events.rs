//! Device changes other nodes made: what a node must hear of to cut off a scanner whose
//! device was disabled, revoked or given a new secret elsewhere.

use quire_codecs::wire::DeviceState;

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    /// Its state was set (to this).
    State(DeviceState),
    /// It was given a new secret; the old one is void.
    Rotated,
}

impl DeviceChange {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceChange::State(s) => s.as_str(),
            DeviceChange::Rotated => "rotated",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceChange> {
        if s == "rotated" {
            return Some(DeviceChange::Rotated);
        }
        DeviceState::parse(s).map(DeviceChange::State)
    }
}

/// A change to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEvent {
    pub device_id: String,
    pub change: DeviceChange,
}

impl DeviceEvent {
    /// Why the device's open connections must close, or `None` if they may stay.
    pub fn cut_off_reason(&self) -> Option<String> {
        let id = &self.device_id;
        match self.change {
            DeviceChange::State(DeviceState::Enabled) => None,
            DeviceChange::State(s) => Some(format!(
                "device {id} was {} by an administrator",
                s.as_str()
            )),
            DeviceChange::Rotated => Some(format!("the credential of device {id} was rotated")),
        }
    }
}
