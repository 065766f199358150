/* metrics — being written */
typedef int parley_metrics_placeholder;
