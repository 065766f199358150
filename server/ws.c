/* ws — being written */
typedef int parley_ws_placeholder;
