//! Load-balancing selection of nodes.
