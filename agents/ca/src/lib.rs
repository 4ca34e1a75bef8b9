//! The cluster CA service (`tessera ca …`); see agents/README.md.
