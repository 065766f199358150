/* broker — being written */
typedef int parley_broker_placeholder;
