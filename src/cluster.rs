//! Throwaway PostgreSQL clusters (PENDING, helper).
