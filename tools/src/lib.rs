//! accel tools library (being written).
