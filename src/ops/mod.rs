//! Storage operations for operators: doctor, export, import, usage. (Being written.)
