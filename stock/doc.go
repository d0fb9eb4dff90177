// Package stock is the allotment engine that tickets, envelope shares and
// shake pools all deduct through: a node's local in-memory share of each
// item (a channel used as a lock) and its refill from Redis, fair shares from
// membership, the coalescer that settles concurrent requests in one script
// call, the in-doubt resolver for batches whose reply was lost, the per-item
// cache, and the batch frame and sweeper shape every product runs on.
//
// It imports nothing product-specific: package order (tickets), envelope and
// shake each supply their script call, their outcome mapping and their
// events, and stand on it as peers.
package stock
