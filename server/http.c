/* http — being written */
typedef int parley_http_placeholder;
