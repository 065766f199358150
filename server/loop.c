/* loop — being written */
typedef int parley_loop_placeholder;
