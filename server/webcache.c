/* webcache — being written */
typedef int parley_webcache_placeholder;
