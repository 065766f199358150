/* store_sqlite — being written */
typedef int parley_store_sqlite_placeholder;
