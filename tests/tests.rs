//! End-to-end tests of the `ringsam` binary (one integration target, as ripgrep does).

mod allreduce;
mod augment;
mod cli;
mod container;
mod distributed;
mod elastic;
mod experiment;
mod finetune;
mod imagenet;
mod netns;
mod regression;
mod train;
mod user_data;
mod util;
