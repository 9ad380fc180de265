use super::Registrar;
use crate::session::Session;
use std::sync::Arc;
pub fn register(_r: &mut Registrar, _session: &Arc<Session>) {}
