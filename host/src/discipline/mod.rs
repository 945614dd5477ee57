pub mod buffers;
pub mod cleanup;
pub mod lock_order;
pub mod state_machine;
