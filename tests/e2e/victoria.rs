//! The sink against VictoriaMetrics (issue 18): placeholder, filled in below.
