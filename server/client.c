/* client — being written */
typedef int parley_client_placeholder;
