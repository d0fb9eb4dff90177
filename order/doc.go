// Package order is tickets: the Seller that sells a sale's units through the
// stock engine (local share, coalesced buy batches, one buy.lua call per
// batch, order.created on Kafka before "you got it"), sale settings in
// Redis, pay and cancel, and what gives unpaid orders' units back at their
// deadline, exactly once: the expiry consumer and the sweeper.
package order
