//! How each scenario is played, once a client process has set its groups up (see
//! `setup`): one module each, `fanout` playing `dm` too, whose groups are pairs.

pub mod connect;
pub mod fanout;
pub mod recall_race;
