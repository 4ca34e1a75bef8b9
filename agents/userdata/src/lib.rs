//! Node configuration ("user-data") acquisition and validation; see agents/README.md.
